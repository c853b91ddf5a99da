using Cowfish.Format;
using Cowfish.Trees;
using Xunit;

namespace Cowfish.Tests;

public sealed class FormatTests
{
    [Fact]
    public void SizesAreWhatTheFormatDocumentSays()
    {
        Assert.Equal(4096, Layout.BlockSize);
        Assert.Equal(32, Layout.BlockHeaderSize);
        Assert.Equal(32, Node.HeaderSize);
        Assert.Equal(512, Superblock.EncodedSize);
        Assert.Equal(32512UL, Layout.BitsPerPage);
        // Two entries of the largest size always fit in one node, so a split always succeeds.
        Assert.True(2 * (Node.LeafEntryOverhead + Layout.MaxKeySize + Layout.MaxValueSize) <= Node.Capacity);
        Assert.True(2 * (Node.InternalEntryOverhead + Layout.MaxKeySize) <= Node.Capacity);
    }

    [Fact]
    public void SuperblockRoundTripsAndRejectsDamage()
    {
        var sb = new Superblock
        {
            PoolId = Guid.NewGuid(), Generation = 42, TotalBlocks = 1000, CatalogRoot = new BlockRef(5, 40), RefCountRoot = new BlockRef(6, 41),
            SpaceMapRoot = new BlockRef(7, 42), NextTreeId = 9, NextDropSeq = 11, CreatedUnixSeconds = 1_700_000_000,
        };
        var buf = new byte[Layout.BlockSize];
        sb.Encode(buf);
        Assert.Equal(Superblock.SlotState.Valid, Superblock.TryDecode(buf, out var back, out _));
        Assert.Equal(sb, back);
        Assert.Equal("CowfishP", System.Text.Encoding.ASCII.GetString(buf, 0, 8));
        buf[100] ^= 1;
        Assert.Equal(Superblock.SlotState.BadChecksum, Superblock.TryDecode(buf, out _, out _));
        buf[100] ^= 1;
        buf[8] = 2;
        Assert.Equal(Superblock.SlotState.BadVersion, Superblock.TryDecode(buf, out _, out _));
        Assert.Equal(Superblock.SlotState.NotAPool, Superblock.TryDecode(new byte[512], out _, out _));
    }

    [Fact]
    public void NodesRoundTripAndEveryBoundIsChecked()
    {
        var n = Node.NewDirty(new PagePool(64), TreeKind.Plain, 0, 3);
        n.Address = 77;
        int payload = 0;
        for (int i = 0; i < 10; i++)
        {
            var k = new[] { (byte)i, (byte)(i * 3) };
            var v = new byte[i * 5];
            n.InsertLeaf(i, k, v);
            payload += Node.LeafEntrySize(k.Length, v.Length);
        }
        Assert.Equal(payload, n.PayloadBytes);
        n.Dirty = false;
        var block = n.Seal().ToArray();
        var back = Node.Decode(block, 77);
        Assert.Equal(10, back.Count);
        Assert.Equal(n.PayloadBytes, back.PayloadBytes);
        Assert.Equal(3UL, back.Generation);
        for (int i = 0; i < 10; i++)
        {
            Assert.True(back.Key(i).SequenceEqual(n.Key(i)));
            Assert.True(back.Value(i).SequenceEqual(n.Value(i)));
        }

        var e = Assert.Throws<CorruptionException>(() => Node.Decode(block, 78));
        Assert.Equal(78UL, e.Address);
        Assert.Contains("self address", e.Message);
        block[200] ^= 0x10;
        e = Assert.Throws<CorruptionException>(() => Node.Decode(block, 77));
        Assert.Contains("checksum", e.Message);
    }

    [Fact]
    public void DecodingRandomBlocksWithValidChecksumsNeverThrowsAnythingElse()
    {
        // Garbage that passes the checksum exercises every length and bound check behind it.
        var rng = new Random(9);
        var block = new byte[Layout.BlockSize];
        int decoded = 0;
        for (int i = 0; i < 20_000; i++)
        {
            rng.NextBytes(block);
            block[24] = (byte)rng.Next(1, 6);
            block[25] = (byte)(rng.Next(4) == 0 ? rng.Next(256) : rng.Next(2));
            block[26] = (byte)rng.Next(40);
            block[27] = 0;
            int end = 32 + rng.Next(4064);
            block[28] = (byte)end;
            block[29] = (byte)(end >> 8);
            if (rng.Next(2) == 0)
                for (int p = 32; p < end - 4; p += rng.Next(4, 60)) { block[p] = (byte)rng.Next(20); block[p + 1] = 0; block[p + 2] = (byte)rng.Next(20); block[p + 3] = 0; }
            BlockHeader.Seal(block, Magic.Node, 9, 1);
            try { Node.Decode(block, 9); decoded++; }
            catch (CorruptionException) { }
        }
        Assert.True(decoded >= 0);
        // The loop reached the bound checks: most garbage is refused, none of it crashed the decoder.
        Assert.True(decoded < 20_000, "every random block decoded: the bound checks were never reached");
    }
}
