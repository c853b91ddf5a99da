using Cowfish.Files;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests;

/// <summary>
/// The record parsers behind a node's checksum (inodes, extents, volume records, catalog values)
/// meet whatever bytes a bug or a crafted pool puts there: they must accept them or throw
/// <see cref="CorruptionException"/>, never anything else.
/// </summary>
public sealed class RecordFuzzTests
{
    private static void Survives(Action parse)
    {
        try { parse(); }
        catch (CorruptionException) { }
    }

    [Fact]
    public void RandomAndMutatedRecordsNeverThrowAnythingButCorruption()
    {
        var rng = new Random(42);
        var validInode = new Inode { Type = FileType.File, Mode = 0x81A4, Nlink = 1, Size = 123 }.Encode();
        var validExtent = new Extent(100, 8, 2, 4, false, [1, 2, 3, 4]).Encode();
        var validVolume = new VolumeRecord("v", new TreeId(3), false, 0, Guid.NewGuid(), Guid.Empty, 0).Encode();
        int accepted = 0;
        for (int i = 0; i < 50_000; i++)
        {
            byte[] Mutate(byte[] valid)
            {
                if (rng.Next(3) == 0)
                {
                    var r = new byte[rng.Next(0, 200)];
                    rng.NextBytes(r);
                    return r;
                }
                var m = valid.ToArray();
                int flips = 1 + rng.Next(4);
                for (int f = 0; f < flips && m.Length > 0; f++) m[rng.Next(m.Length)] ^= (byte)(1 << rng.Next(8));
                if (rng.Next(5) == 0) Array.Resize(ref m, Math.Max(0, m.Length + rng.Next(-8, 9)));
                return m;
            }
            var inode = Mutate(validInode);
            var extent = Mutate(validExtent);
            var volume = Mutate(validVolume);
            Survives(() => { Inode.Decode(inode, 7, 9); accepted++; });
            Survives(() => { var e = Extent.Decode(extent, 7); _ = e.Slice(0, e.Count); });
            Survives(() => VolumeRecord.Decode([(byte)'v'], volume));
            Survives(() => CatalogKeys.TryParseTree(CatalogKeys.Tree(1), volume, out _, out _, out _));
            Survives(() => CatalogKeys.ParseRefValue(extent, 7));
        }
        Assert.True(accepted > 0, "some mutated inodes should still parse");
    }
}
