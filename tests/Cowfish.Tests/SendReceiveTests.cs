using System.Text;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests;

/// <summary>Send and receive through the library: full and incremental round trips, chains, wrong parents, clones, cost.</summary>
public sealed class SendReceiveTests
{
    internal static FileSystem NewFs() => new(Pool.Create(new MemoryDevice(), null, ownsDevice: true), ownsPool: true);

    internal static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>A volume with a bit of everything a volume holds.</summary>
    internal static void Populate(FileSystem fs, string v)
    {
        fs.CreateVolume(v);
        fs.CreateDirectory($"{v}/d");
        fs.CreateDirectory($"{v}/d/e", 0x1C0);
        fs.CreateFile($"{v}/d/a.bin", 0x180);
        fs.Write($"{v}/d/a.bin", 0, Bytes(300_000, 1));
        fs.Write($"{v}/d/a.bin", 2_000_000, Bytes(5000, 2)); // a hole before
        fs.CreateFile($"{v}/empty");
        fs.CreateFile($"{v}/sparse");
        fs.Truncate($"{v}/sparse", 10_000_000);
        fs.CreateFile($"{v}/pre");
        fs.Preallocate($"{v}/pre", 8192, 40_000);
        fs.CreateSymlink($"{v}/d/link", "../empty");
        fs.Link($"{v}/d/a.bin", $"{v}/d/e/hard");
        fs.SetXattr($"{v}/d/a.bin", "user.k", Encoding.UTF8.GetBytes("value"));
        fs.SetXattr($"{v}/d", "user.dir", [1, 2, 3]);
        fs.SetAttributes($"{v}/d/e", uid: 1000, gid: 100, modified: DateTimeOffset.FromUnixTimeSeconds(1_000_000));
    }

    internal static byte[] Send(FileSystem fs, string snap, string? parent = null, SendOptions? options = null)
    {
        var ms = new MemoryStream();
        SendStream.Write(fs, snap, parent, ms, options);
        return ms.ToArray();
    }

    internal static ReceiveResult Receive(FileSystem fs, byte[] stream, string? name = null) =>
        ReceiveStream.Apply(fs, new MemoryStream(stream), new ReceiveOptions { Name = name });

    [Fact]
    public void FullRoundTripReproducesEverything()
    {
        using var a = NewFs();
        using var b = NewFs();
        Populate(a, "v");
        a.Snapshot("v", "s1", readOnly: true);
        var stream = Send(a, "s1");
        var r = Receive(b, stream);
        Assert.Equal("s1", r.Name);
        VolumeCompare.AssertSame(a, "s1", b, "s1");
        var info = b.ListVolumes().Single();
        Assert.True(info.ReadOnly);
        Assert.Equal(a.ListVolumes().Single(v => v.Name == "s1").Id, info.Received);
        TreeModel.AssertClean(b.Pool, "after receive");
        TreeModel.AssertClean(a.Pool, "sender");
    }

    [Fact]
    public void IncrementalRoundTripCarriesEveryKindOfChange()
    {
        using var a = NewFs();
        using var b = NewFs();
        Populate(a, "v");
        a.Snapshot("v", "s1", readOnly: true);
        Receive(b, Send(a, "s1"));
        // renames, unlinks, overwrites, truncates, punches, xattrs, attributes, new links, new dirs
        a.Rename("v/d/a.bin", "v/moved.bin");
        a.Remove("v/d/link");
        a.CreateSymlink("v/d/link2", "moved.bin");
        a.Write("v/moved.bin", 4096 * 10 + 17, Bytes(9000, 3));
        a.Truncate("v/sparse", 4096);
        a.PunchHole("v/moved.bin", 0, 8192);
        a.RemoveXattr("v/moved.bin", "user.k");
        a.SetXattr("v/moved.bin", "user.new", [9]);
        a.SetAttributes("v/d", mode: 0x1FF);
        a.CreateDirectory("v/n");
        a.CreateFile("v/n/f");
        a.Write("v/n/f", 0, Bytes(70_000, 4));
        a.Link("v/n/f", "v/n/g");
        a.Remove("v/d/e/hard");
        a.Rename("v/d/e", "v/n/e");
        a.Remove("v/pre");
        a.Snapshot("v", "s2", readOnly: true);
        var stream = Send(a, "s2", "s1");
        var r = Receive(b, stream);
        Assert.Equal(a.ListVolumes().Single(v => v.Name == "s1").Id, r.Parent);
        VolumeCompare.AssertSame(a, "s2", b, "s2");
        VolumeCompare.AssertSame(a, "s1", b, "s1");
        TreeModel.AssertClean(b.Pool, "after incremental receive");
    }

    [Fact]
    public void SendRefusesToCarryDataThatWentBadOnDisk()
    {
        var mem = new MemoryDevice();
        using var a = new FileSystem(Pool.Create(mem), ownsPool: true);
        a.CreateVolume("v");
        a.CreateFile("v/f");
        var data = Bytes(64 << 10, 21);
        a.Write("v/f", 0, data);
        a.Snapshot("v", "s", readOnly: true);
        a.Flush();
        // Find the file's third block on the device and flip one bit of it.
        var image = mem.ToArray();
        int at = image.AsSpan().IndexOf(data.AsSpan(8192, 64));
        Assert.True(at > 0 && at % 4096 == 0, "the block was not found on the device");
        mem.Write(at + 100, [(byte)(image[at + 100] ^ 1)]);
        var e = Assert.Throws<CorruptionException>(() => Send(a, "s"));
        Assert.Contains("checksum", e.Message);
        TreeModel.AssertClean(a.Pool, "after the refused send (check does not read data blocks)");
    }

    [Fact]
    public void SendRefusesWritableVolumes()
    {
        using var a = NewFs();
        Populate(a, "v");
        a.Snapshot("v", "w", readOnly: false);
        a.Snapshot("v", "s", readOnly: true);
        Assert.Throws<InvalidRequestException>(() => Send(a, "v"));
        Assert.Throws<InvalidRequestException>(() => Send(a, "w"));
        Assert.Throws<InvalidRequestException>(() => Send(a, "s", "v"));
        Assert.Throws<NotFoundException>(() => Send(a, "nope"));
        TreeModel.AssertClean(a.Pool, "after the refusals");
    }

    [Fact]
    public void ChainOfTwentyIncrementalsReproducesTheLastAndWrongParentsAreRefused()
    {
        using var a = NewFs();
        using var b = NewFs();
        var rng = new Random(20);
        a.CreateVolume("v");
        a.CreateFile("v/big");
        a.Write("v/big", 0, Bytes(1 << 20, 5));
        a.Snapshot("v", "s0", readOnly: true);
        Receive(b, Send(a, "s0"));
        byte[]? skipped = null;
        for (int i = 1; i <= 20; i++)
        {
            a.Write("v/big", rng.Next(250) * 4096, Bytes(4096 * rng.Next(1, 4), 100 + i));
            a.CreateFile($"v/f{i}");
            a.Write($"v/f{i}", 0, Bytes(rng.Next(1, 20_000), 200 + i));
            if (i % 3 == 0 && a.Exists($"v/f{i - 1}")) a.Remove($"v/f{i - 1}");
            if (i % 4 == 0) a.Rename($"v/f{i}", $"v/r{i}");
            if (i % 5 == 0) a.Clone("v/big", $"v/c{i}");
            a.Snapshot("v", $"s{i}", readOnly: true);
            var stream = Send(a, $"s{i}", $"s{i - 1}");
            if (i == 10) { skipped = stream; continue; } // received later, out of order
            if (i == 11)
            {
                // s11's parent s10 is missing here: refused, pool unchanged.
                var e = Assert.Throws<InvalidRequestException>(() => Receive(b, stream));
                Assert.Contains("not on this pool", e.Message);
                Assert.Null(ReceiveStream.Pending(b));
                Receive(b, skipped!);
            }
            Receive(b, stream);
        }
        VolumeCompare.AssertSame(a, "s20", b, "s20");
        // A stream from s19 to s20 again (its target exists) and one whose parent differs are refused.
        Assert.Throws<InvalidRequestException>(() => Receive(b, Send(a, "s20", "s19")));
        b.DeleteVolume("s19");
        b.Snapshot("s18", "fake", readOnly: true);
        Assert.Throws<InvalidRequestException>(() => Receive(b, Send(a, "s20", "s19"), "again"));
        // Receipts of deleted volumes are pruned by the next receive.
        Receive(b, Send(a, "s20"), "full20");
        using (var rt = b.Pool.BeginRead())
            Assert.Equal(b.ListVolumes().Where(v => v.Received is not null).Select(v => v.Id).Order(), VolumeReceipts.All(rt).Keys.Order());
        Assert.Equal(21, b.ListVolumes().Count(v => v.Received is not null)); // s0..s20 without s19, and full20
        TreeModel.AssertClean(b.Pool, "after the chain");
        TreeModel.AssertClean(a.Pool, "the sender after the chain");
    }

    [Fact]
    public void ARelayedSnapshotIsAParentForStreamsFromTheOrigin()
    {
        using var a = NewFs();
        using var b = NewFs();
        using var c = NewFs();
        Populate(a, "v");
        a.Snapshot("v", "s1", readOnly: true);
        Receive(b, Send(a, "s1"));
        Receive(c, Send(b, "s1")); // A → B → C
        Assert.Equal(a.ListVolumes().Single(v => v.Name == "s1").Id, c.ListVolumes().Single().Received);
        a.Write("v/d/a.bin", 0, Bytes(5000, 30));
        a.Snapshot("v", "s2", readOnly: true);
        Receive(c, Send(a, "s2", "s1")); // straight from A to C, whose s1 came through B
        VolumeCompare.AssertSame(a, "s2", c, "s2");
        TreeModel.AssertClean(c.Pool, "after the relay");
        TreeModel.AssertClean(b.Pool, "the relay");
    }

    [Fact]
    public void AParentThatDiffersOnTheReceiverIsRefused()
    {
        using var a = NewFs();
        using var b = NewFs();
        Populate(a, "v");
        a.Snapshot("v", "s1", readOnly: true);
        a.CreateFile("v/new");
        a.Snapshot("v", "s2", readOnly: true);
        var inc = Send(a, "s2", "s1");
        // An impostor: a read-only snapshot here that claims to have been received from s1, with other content.
        Populate(b, "w");
        b.CreateFile("w/extra");
        b.Snapshot("w", "imp", readOnly: true);
        Guid s1 = a.ListVolumes().Single(v => v.Name == "s1").Id;
        using (var tx = b.Pool.BeginWrite())
        {
            var dir = FileSystem.VolumeDirectory(tx);
            var rec = FileSystem.GetVolume(tx, dir, "imp");
            VolumeReceipts.Set(tx, rec.Id, s1, new HashSet<Guid> { rec.Id });
            tx.Commit();
        }
        var e = Assert.Throws<InvalidRequestException>(() => Receive(b, inc));
        Assert.Contains("differs", e.Message);
        Assert.Null(ReceiveStream.Pending(b));
        // With the genuine parent present too, the genuine one is used.
        Receive(b, Send(a, "s1"));
        Receive(b, inc);
        VolumeCompare.AssertSame(a, "s2", b, "s2");
        TreeModel.AssertClean(b.Pool, "after the impostor");
        TreeModel.AssertClean(a.Pool, "the sender");
    }

    [Fact]
    public void ClonesStayClonesAndTheStreamIsSmallerThanTheData()
    {
        using var a = NewFs();
        using var b = NewFs();
        a.CreateVolume("v");
        a.CreateFile("v/base");
        a.Write("v/base", 0, Bytes(4 << 20, 6));
        a.Clone("v/base", "v/whole");
        a.CreateFile("v/part");
        a.CloneRange("v/base", 1 << 20, 1 << 20, "v/part", 0);
        a.Write("v/part", 4096, Bytes(4096, 7));
        a.CreateFile("v/self");
        a.Write("v/self", 0, Bytes(64 << 10, 8));
        a.CloneRange("v/self", 0, 64 << 10, "v/self", 1 << 20);
        a.Snapshot("v", "s", readOnly: true);
        var stream = Send(a, "s");
        Receive(b, stream);
        VolumeCompare.AssertSame(a, "s", b, "s");
        long data = (4 << 20) * 2 + (1 << 20) + (128 << 10);
        long unique = (4 << 20) + 4096 + (64 << 10);
        Assert.True(stream.Length < data / 2, $"stream of {stream.Length} bytes for {data} bytes of file data");
        Assert.True(stream.Length < unique + (64 << 10), $"stream of {stream.Length} bytes for {unique} unique bytes");
        var used = b.Usage("s");
        Assert.True(used.SharedBytes >= (4 << 20) * 2, $"received clones share {used.SharedBytes} bytes");
        var whole = b.Usage("s/whole");
        Assert.Equal(whole.TotalBytes, whole.SharedBytes);
        TreeModel.AssertClean(b.Pool, "after receiving clones");
        TreeModel.AssertClean(a.Pool, "the sender");
    }

    [Fact]
    public void IncrementalSendsClonesOfParentFilesAsClones()
    {
        using var a = NewFs();
        using var b = NewFs();
        a.CreateVolume("v");
        a.CreateFile("v/base");
        a.Write("v/base", 0, Bytes(4 << 20, 13));
        a.CreateFile("v/other");
        a.Write("v/other", 0, Bytes(1 << 20, 14));
        a.Snapshot("v", "s1", readOnly: true);
        Receive(b, Send(a, "s1"));
        // New files cloned from parent files: one as is, one changed after the clone, and one cloned
        // from a file that this very step also rewrites (the receiver must not clone the new data).
        a.Clone("v/base", "v/vm1");
        a.Clone("v/base", "v/vm2");
        a.Write("v/vm2", 8192, Bytes(4096, 15));
        a.Clone("v/other", "v/vm3");
        a.Write("v/other", 0, Bytes(1 << 20, 16));
        a.Snapshot("v", "s2", readOnly: true);
        var stream = Send(a, "s2", "s1");
        Receive(b, stream);
        VolumeCompare.AssertSame(a, "s2", b, "s2");
        // vm1 and vm2 come as clones of base; other's new data is sent once, vm3 as data or a clone of it.
        Assert.True(stream.Length < (1 << 20) * 2 + (64 << 10), $"stream of {stream.Length} bytes");
        var u = b.Usage("s2/vm2");
        Assert.True(u.SharedBytes >= (4 << 20) - 8192, $"vm2 shares {u.SharedBytes} bytes");
        TreeModel.AssertClean(b.Pool, "after clones of parent files");
        TreeModel.AssertClean(a.Pool, "the sender");
    }

    [Fact]
    public void IncrementalStreamCostsTheChangedBytes()
    {
        using var a = NewFs();
        a.CreateVolume("v");
        a.CreateFile("v/big");
        const int Size = 64 << 20;
        var chunk = Bytes(1 << 20, 9);
        for (int off = 0; off < Size; off += chunk.Length) a.Write("v/big", off, chunk);
        for (int i = 0; i < 200; i++) { a.CreateFile($"v/other{i}"); }
        a.Snapshot("v", "s1", readOnly: true);
        var rng = new Random(11);
        var blocks = new HashSet<int>();
        while (blocks.Count < 160) blocks.Add(rng.Next(Size / 4096));
        foreach (int blk in blocks) a.Write("v/big", blk * 4096L, Bytes(4096, blk));
        a.Snapshot("v", "s2", readOnly: true);
        var stream = Send(a, "s2", "s1");
        long changed = blocks.Count * 4096L;
        Assert.True(stream.Length <= changed * 1.2 + 4096, $"{stream.Length} bytes of stream for {changed} changed bytes");
        using var b = NewFs();
        Receive(b, Send(a, "s1"));
        Receive(b, stream);
        VolumeCompare.AssertSame(a, "s2", b, "s2");
        TreeModel.AssertClean(b.Pool, "after the incremental");
        TreeModel.AssertClean(a.Pool, "the sender");
    }

    [Fact]
    public void ReceiveIntoTheSamePoolUnderANewName()
    {
        using var a = NewFs();
        Populate(a, "v");
        a.Snapshot("v", "s1", readOnly: true);
        Receive(a, Send(a, "s1"), "copy1");
        VolumeCompare.AssertSame(a, "s1", a, "copy1");
        a.Write("v/d/a.bin", 0, Bytes(100, 12));
        a.Snapshot("v", "s2", readOnly: true);
        Receive(a, Send(a, "s2", "s1"), "copy2");
        VolumeCompare.AssertSame(a, "s2", a, "copy2");
        TreeModel.AssertClean(a.Pool, "after receiving into the same pool");
    }
}
