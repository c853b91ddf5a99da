using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Cowfish.Trees;
using Xunit;

namespace Cowfish.Tests;

public sealed class FileSystemTests
{
    private static FileSystem NewFs(MemoryDevice? dev = null) => new(Pool.Create(dev ?? new MemoryDevice(), PoolChecker.Strict()), ownsPool: true);

    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void VolumesCanBeCreatedListedRenamedAndDeleted()
    {
        using var fs = NewFs();
        fs.CreateVolume("vms");
        fs.CreateVolume("backups");
        Assert.Equal(["backups", "vms"], fs.ListVolumes().Select(v => v.Name).Order().ToArray());
        Assert.Throws<InvalidRequestException>(() => fs.CreateVolume("vms"));
        fs.RenameVolume("backups", "archive");
        Assert.Equal(["archive", "vms"], fs.ListVolumes().Select(v => v.Name).Order().ToArray());
        fs.DeleteVolume("archive");
        Assert.Equal(["vms"], fs.ListVolumes().Select(v => v.Name).ToArray());
        Assert.Throws<NotFoundException>(() => fs.DeleteVolume("archive"));
        TreeModel.AssertClean(fs.Pool, "volumes");
    }

    [Fact]
    public void NamespaceOperationsWork()
    {
        using var fs = NewFs();
        fs.CreateVolume("v");
        fs.CreateDirectory("v/a");
        fs.CreateDirectory("v/a/b");
        fs.CreateFile("v/a/b/f");
        fs.CreateSymlink("v/a/link", "b/f");
        Assert.Equal("b/f", fs.ReadSymlink("v/a/link"));
        fs.Link("v/a/b/f", "v/hard");
        Assert.Equal(2u, fs.Stat("v/hard").Links);
        Assert.Equal(fs.Stat("v/a/b/f").Inode, fs.Stat("v/hard").Inode);
        Assert.Equal(["b", "link"], fs.ListDirectory("v/a").Select(e => e.Name).ToArray());
        Assert.Throws<InvalidRequestException>(() => fs.Remove("v/a"));
        fs.Rename("v/a/b/f", "v/a/g");
        Assert.False(fs.Exists("v/a/b/f"));
        Assert.True(fs.Exists("v/a/g"));
        Assert.Throws<InvalidRequestException>(() => fs.Rename("v/a", "v/a/b/inside"));
        fs.SetXattr("v/a/g", "user.color", [1, 2, 3]);
        Assert.True(fs.TryGetXattr("v/a/g", "user.color", out var x));
        Assert.Equal(new byte[] { 1, 2, 3 }, x);
        fs.SetAttributes("v/a/g", mode: 0x180, uid: 1000, gid: 100);
        var st = fs.Stat("v/a/g");
        Assert.Equal(0x8180u, st.Mode);
        Assert.Equal(1000u, st.Uid);
        fs.Remove("v/hard");
        Assert.Equal(1u, fs.Stat("v/a/g").Links);
        fs.Remove("v/a/g");
        fs.Remove("v/a/link");
        fs.Remove("v/a/b");
        fs.Remove("v/a");
        Assert.Empty(fs.ListDirectory("v"));
        Assert.Equal(2u, fs.Stat("v").Links);
        TreeModel.AssertClean(fs.Pool, "namespace");
    }

    [Theory]
    [InlineData(0, 4096)]
    [InlineData(100, 10)]
    [InlineData(4000, 200)]
    [InlineData(12345, 1_000_000)]
    [InlineData(5_000_000, 3 * 1024 * 1024 + 7)]
    public void WritesReadBackAtAnyOffsetAndLength(long offset, int length)
    {
        using var fs = NewFs();
        fs.CreateVolume("v");
        fs.CreateFile("v/f");
        var data = Pattern(length, (int)offset);
        fs.Write("v/f", offset, data);
        Assert.Equal((ulong)(offset + length), fs.Stat("v/f").Size);
        var back = fs.ReadAll("v/f");
        Assert.True(back.AsSpan(0, (int)offset).IndexOfAnyExcept((byte)0) < 0, "the hole before the data reads as zeros");
        Assert.True(back.AsSpan((int)offset).SequenceEqual(data));
        // Overwrite a middle piece, unaligned.
        var patch = Pattern(5000, 99);
        fs.Write("v/f", offset + length / 3, patch);
        var expect = back.ToArray();
        var end = Math.Min(expect.Length, (int)(offset + length / 3) + patch.Length);
        var grown = new byte[Math.Max(expect.Length, (int)(offset + length / 3) + patch.Length)];
        expect.CopyTo(grown, 0);
        patch.CopyTo(grown, (int)(offset + length / 3));
        Assert.True(fs.ReadAll("v/f").AsSpan().SequenceEqual(grown));
        TreeModel.AssertClean(fs.Pool, "writes");
    }

    [Fact]
    public void TruncatePunchZeroAndPreallocate()
    {
        using var fs = NewFs();
        fs.CreateVolume("v");
        fs.CreateFile("v/f");
        var data = Pattern(100_000, 1);
        fs.Write("v/f", 0, data);
        fs.Truncate("v/f", 50_001);
        fs.Truncate("v/f", 80_000);
        var back = fs.ReadAll("v/f");
        Assert.Equal(80_000, back.Length);
        Assert.True(back.AsSpan(0, 50_001).SequenceEqual(data.AsSpan(0, 50_001)));
        Assert.True(back.AsSpan(50_001).IndexOfAnyExcept((byte)0) < 0);

        fs.PunchHole("v/f", 1000, 20_000);
        back = fs.ReadAll("v/f");
        Assert.Equal(80_000, back.Length);
        Assert.True(back.AsSpan(1000, 20_000).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(back.AsSpan(0, 1000).SequenceEqual(data.AsSpan(0, 1000)));
        Assert.True(back.AsSpan(21_000, 29_001).SequenceEqual(data.AsSpan(21_000, 29_001)));

        fs.ZeroRange("v/f", 79_000, 5000);
        Assert.Equal(84_000UL, fs.Stat("v/f").Size);
        fs.Preallocate("v/f", 0, 200_000);
        Assert.Equal(200_000UL, fs.Stat("v/f").Size);
        back = fs.ReadAll("v/f");
        Assert.True(back.AsSpan(0, 1000).SequenceEqual(data.AsSpan(0, 1000)));
        Assert.True(back.AsSpan(84_000).IndexOfAnyExcept((byte)0) < 0);
        fs.Truncate("v/f", 0);
        Assert.Empty(fs.ReadAll("v/f"));
        TreeModel.AssertClean(fs.Pool, "truncate/punch");
    }

    [Fact]
    public void ClonesAndSnapshotsShareAndDiverge()
    {
        using var fs = NewFs();
        fs.CreateVolume("v");
        fs.CreateFile("v/img");
        var data = Pattern(3_000_000, 5);
        fs.Write("v/img", 0, data);
        ulong used = fs.Pool.Info().UsedBlocks;
        fs.Clone("v/img", "v/copy");
        Assert.True(fs.Pool.Info().UsedBlocks - used < 10, "a clone copies no data");
        fs.Snapshot("v", "snap", readOnly: true);
        fs.Write("v/copy", 4096, Pattern(4096, 6));
        fs.Write("v/img", 0, Pattern(100, 7));
        Assert.True(fs.ReadAll("snap/img").AsSpan().SequenceEqual(data));
        Assert.True(fs.ReadAll("snap/copy").AsSpan().SequenceEqual(data));
        var copy = fs.ReadAll("v/copy");
        Assert.True(copy.AsSpan(0, 4096).SequenceEqual(data.AsSpan(0, 4096)));
        Assert.True(copy.AsSpan(4096, 4096).SequenceEqual(Pattern(4096, 6)));
        Assert.Throws<ReadOnlyVolumeException>(() => fs.Write("snap/img", 0, [1]));

        fs.CloneRange("v/img", 8192, 16384, "v/copy", 1_000_000 - 1_000_000 % 4096);
        var c2 = fs.ReadAll("v/copy");
        Assert.True(c2.AsSpan(1_000_000 - 1_000_000 % 4096, 16384).SequenceEqual(data.AsSpan(8192, 16384)));
        Assert.Throws<InvalidRequestException>(() => fs.CloneRange("v/img", 0, 8192, "v/img", 4096));
        Assert.Throws<InvalidRequestException>(() => fs.CloneRange("v/img", 100, 4096, "v/copy", 0));

        fs.CreateFile("v/dup");
        fs.Write("v/dup", 0, data.AsSpan(0, 65536));
        Assert.False(fs.Dedupe("v/img", 0, 65536, "v/dup", 0)); // img's first bytes were overwritten
        Assert.True(fs.Dedupe("snap/img", 0, 65536, "v/dup", 0));
        Assert.True(fs.ReadAll("v/dup").AsSpan().SequenceEqual(data.AsSpan(0, 65536)));

        fs.Remove("v/img");
        fs.DeleteVolume("snap");
        fs.Reclaim();
        TreeModel.AssertClean(fs.Pool, "clones");
    }

    [Fact]
    public void DeletingEverythingGivesTheSpaceBack()
    {
        using var fs = NewFs();
        fs.CreateVolume("v");
        ulong empty = fs.Pool.Info().UsedBlocks;
        fs.CreateFile("v/a");
        fs.Write("v/a", 0, Pattern(2_000_000, 1));
        fs.Clone("v/a", "v/b");
        fs.Snapshot("v", "s");
        fs.Write("v/b", 0, Pattern(500_000, 2));
        fs.CloneRange("v/a", 0, 1 << 20, "s/a", 1 << 20);
        Assert.True(fs.Pool.Info().UsedBlocks > empty + 500);
        fs.DeleteVolume("s");
        fs.Remove("v/a");
        fs.Remove("v/b");
        fs.Reclaim();
        TreeModel.AssertClean(fs.Pool, "after deleting");
        Assert.InRange(fs.Pool.Info().UsedBlocks, empty - 3, empty + 3);
    }
}

public sealed class UsageTests
{
    [Fact]
    public void ExclusiveAndSharedBytesFollowClonesSnapshotsAndWrites()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice()), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/a");
        fs.Write("v/a", 0, new byte[40 * 4096]);
        Assert.Equal(new SpaceUsage(40 * 4096, 40 * 4096, 0), fs.Usage("v/a"));
        fs.Clone("v/a", "v/b");
        Assert.Equal(new SpaceUsage(40 * 4096, 0, 40 * 4096), fs.Usage("v/a"));
        Assert.Equal(new SpaceUsage(80 * 4096, 0, 80 * 4096), fs.Usage("v"));
        fs.Write("v/b", 0, new byte[4 * 4096]);
        Assert.Equal(new SpaceUsage(40 * 4096, 4 * 4096, 36 * 4096), fs.Usage("v/b"));
        fs.Snapshot("v", "s");
        Assert.Equal(0UL, fs.Usage("v/b").ExclusiveBytes);
        Assert.Equal(0UL, fs.Usage("s").ExclusiveBytes);
        fs.DeleteVolume("s");
        fs.Reclaim();
        // Within v, a and b are the only users of a's extent: deleting v would free all of it.
        Assert.Equal(80UL * 4096, fs.Usage("v").ExclusiveBytes);
        Assert.Equal(4UL * 4096, fs.Usage("v/b").ExclusiveBytes);
        fs.Remove("v/a");
        fs.Reclaim();
        // b now owns everything it references: its old records point to a's extent, referenced once.
        Assert.Equal(new SpaceUsage(40 * 4096, 40 * 4096, 0), fs.Usage("v/b"));
        Assert.Equal(fs.Usage("v"), fs.Usage());
        TreeModel.AssertClean(fs.Pool, "usage");
    }

    [Fact]
    public void OverwritingPartOfAFileFreesTheOldBlocks()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice()), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/f");
        fs.Write("v/f", 0, new byte[64 * 1024]);
        ulong before = fs.Pool.Info().UsedBlocks;
        for (int i = 1; i < 16; i += 2) fs.Write("v/f", i * 4096, new byte[4096]);
        fs.Flush();
        // Each overwrite splits the extent and frees the block it replaced: the data uses as many
        // blocks as before (bookkeeping may move by a block or two).
        Assert.InRange(fs.Pool.Info().UsedBlocks, before - 2, before + 3);
        Assert.Equal(new SpaceUsage(64 * 1024, 64 * 1024, 0), fs.Usage("v/f"));
        fs.Snapshot("v", "s");
        fs.Write("v/f", 0, new byte[4096]);
        // With a snapshot sharing the extent, the old block must stay.
        Assert.Equal(4096UL, fs.Usage("v/f").ExclusiveBytes);
        TreeModel.AssertClean(fs.Pool, "partial overwrites");
    }
}

public sealed class FrozenTreeTests
{
    [Fact]
    public void AFrozenSourceLeftByAnInterruptedRangeCloneIsDroppedAtOpen()
    {
        var dev = new MemoryDevice();
        ulong used;
        using (var fs = new FileSystem(Pool.Create(dev), ownsPool: true))
        {
            fs.CreateVolume("v");
            fs.CreateFile("v/f");
            fs.Write("v/f", 0, new byte[1 << 20]);
            fs.Flush();
            used = fs.Pool.Info().UsedBlocks;
            // What a range clone does first, then a crash before it finished: the frozen copy stays named.
            var (rec, ino) = fs.ResolveFile(PoolPath.Parse("v/f"));
            using var tx = fs.Pool.BeginWrite();
            var v = new VolumeWriter(FileSystem.GetVolume(tx, FileSystem.VolumeDirectory(tx), "v"), tx);
            var frozen = tx.AdoptTree(Cowfish.Trees.TreeKind.FileExtents, v.GetInode(ino).Extents);
            tx.SetNamedTree(FileSystem.FrozenPrefix + frozen.Value, frozen);
            v.Unlink(VolumeReader.RootIno, FileKeys.Name("f")); // the source goes: only the frozen copy holds its data
            tx.Commit();
        }
        using (var pool = Pool.Open(dev))
        {
            Assert.True(pool.Info().UsedBlocks > used - 10, "the frozen copy keeps the data alive");
            using var fs = new FileSystem(pool);
            fs.Reclaim();
            using var rt = pool.BeginRead();
            Assert.DoesNotContain(rt.ListTrees(), t => t.Value > 2);
            TreeModel.AssertClean(pool, "after dropping the leftover");
            Assert.True(pool.Info().UsedBlocks < used - 200, "the data came back");
        }
    }
}

public sealed class PendingFreeTests
{
    [Fact]
    public void AWriterThatNeverFlushesDoesNotGrowThePoolWithoutBound()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice()), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/f");
        var block = new byte[64 * 1024];
        // Overwrite the same 4 MiB again and again without a flush: 256 MiB (65,536 blocks) of writes.
        for (int round = 0; round < 64; round++)
            for (int i = 0; i < 64; i++) fs.Write("v/f", i * block.Length, block);
        ulong total = fs.Pool.Space.TotalBlocks;
        // Unbounded, the pool would hold every version written (65,536 blocks and more).
        Assert.True(total < 40_000, $"the pool grew to {total} blocks for 1,024 blocks of live data");
        TreeModel.AssertClean(fs.Pool, "after unflushed overwrites");
    }
}

public sealed class FileHandleTests
{
    [Fact]
    public void AHandleReadsAndWritesWithoutThePathAndFailsCleanlyOnceTheFileIsGone()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice()), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/img");
        var h = fs.OpenFile("v/img");
        h.Write(10_000, new byte[] { 1, 2, 3 });
        Assert.Equal(10_003, h.Size);
        var buf = new byte[5];
        Assert.Equal(4, h.Read(9_999, buf)); // short at the end of the file
        Assert.Equal(new byte[] { 0, 1, 2, 3 }, buf.AsSpan(0, 4).ToArray());
        Assert.Single(h.DataRanges());
        fs.Snapshot("v", "s", readOnly: true);
        var ro = fs.OpenFile("s/img");
        Assert.True(ro.ReadOnly);
        Assert.Throws<ReadOnlyVolumeException>(() => ro.Write(0, new byte[1]));
        fs.Remove("v/img");
        Assert.Throws<NotFoundException>(() => h.Write(0, new byte[1]));
        Assert.Throws<NotFoundException>(() => h.Read(0, buf));
        Assert.Equal(3, ro.Read(10_000, buf.AsSpan(0, 3)));
        fs.Reclaim();
        TreeModel.AssertClean(fs.Pool, "handles");
    }
}

public sealed class VolumeCheckTests
{
    private static List<string> Faults(FileSystem fs) => PoolChecker.Check(fs.Pool).Faults.Select(f => f.Message).ToList();

    private static void Damage(FileSystem fs, Action<TreeWriter> change)
    {
        using var tx = fs.Pool.BeginWrite();
        var rec = FileSystem.GetVolume(tx, FileSystem.VolumeDirectory(tx), "v");
        change(tx.TreeWriterFor(rec.Tree));
        tx.Commit();
    }

    [Fact]
    public void CheckFindsABrokenNamespace()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice()), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateDirectory("v/d");
        fs.CreateFile("v/d/f");
        fs.Write("v/d/f", 0, new byte[10_000]);
        Assert.Empty(Faults(fs));
        ulong f = fs.Stat("v/d/f").Inode, d = fs.Stat("v/d").Inode;

        // A wrong link count.
        Damage(fs, w => w.Put(FileKeys.InodeKey(f), (Inode.Decode(w.TryGet(FileKeys.InodeKey(f), out var v) ? v : [], 0, f) with { Nlink = 3 }).Encode(), releaseReplaced: false));
        Assert.Contains(Faults(fs), m => m.Contains($"inode {f} records 3 links, found 1"));
        Damage(fs, w => w.Put(FileKeys.InodeKey(f), (Inode.Decode(w.TryGet(FileKeys.InodeKey(f), out var v) ? v : [], 0, f) with { Nlink = 1 }).Encode(), releaseReplaced: false));
        Assert.Empty(Faults(fs));

        // An entry without its back-reference, and a back-reference without its entry.
        Damage(fs, w => w.Delete(FileKeys.InodeRefKey(f, d, FileKeys.Name("f"))));
        Assert.Contains(Faults(fs), m => m.Contains("has no back-reference"));
        Damage(fs, w =>
        {
            w.Put(FileKeys.InodeRefKey(f, d, FileKeys.Name("f")), []);
            w.Put(FileKeys.InodeRefKey(f, d, FileKeys.Name("ghost")), []);
        });
        Assert.Contains(Faults(fs), m => m.Contains("with no entry there"));
        Damage(fs, w => w.Delete(FileKeys.InodeRefKey(f, d, FileKeys.Name("ghost"))));

        // An entry that points nowhere.
        Damage(fs, w => w.Put(FileKeys.DirEntryKey(d, FileKeys.Name("lost")), [99, 0, 0, 0, 0, 0, 0, 0, 1]));
        Assert.Contains(Faults(fs), m => m.Contains("points to missing inode 99"));
        Damage(fs, w => w.Delete(FileKeys.DirEntryKey(d, FileKeys.Name("lost"))));

        // A size that ends before the extents do.
        Damage(fs, w => w.Put(FileKeys.InodeKey(f), (Inode.Decode(w.TryGet(FileKeys.InodeKey(f), out var v) ? v : [], 0, f) with { Size = 100 }).Encode(), releaseReplaced: false));
        Assert.Contains(Faults(fs), m => m.Contains("past the size"));
    }

    [Fact]
    public void CheckFindsAVolumeWhoseTreeWasDroppedUnderneathIt()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice()), ownsPool: true);
        fs.CreateVolume("v");
        using (var tx = fs.Pool.BeginWrite())
        {
            tx.DropTree(FileSystem.GetVolume(tx, FileSystem.VolumeDirectory(tx), "v").Tree);
            tx.Commit();
        }
        Assert.Contains(Faults(fs), m => m.Contains("which does not exist"));
    }
}
