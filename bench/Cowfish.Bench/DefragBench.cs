using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Cowfish.Checking;
using Cowfish.Files;
using Cowfish.Relocation;

namespace Cowfish.Bench;

/// <summary>
/// Defrag of a fragmented file that a snapshot shares, against <c>btrfs filesystem defragment</c>
/// on a loop device. Both sides get the same layout: two files (a VM image and a neighbour) filled
/// in 64 KiB chunks, in one shuffled order, a chunk of each in turn (two guests installing at
/// once; btrfs writes with O_DIRECT so that its delayed allocation does not sort them), then a
/// read-only snapshot of the volume (subvolume). Measured: fragments (maximal physically
/// contiguous runs: <c>filefrag</c> on btrfs), a cold sequential read of the image before and
/// after, the defrag's time, and the space in use before and after. The Cowfish image and its
/// snapshot copy are hashed before and after, and check runs after.
/// </summary>
internal static class DefragBench
{
    private const int MiB = 1 << 20;
    private const int Chunk = 64 * 1024;

    private sealed record Figures(int FragmentsBefore, int FragmentsAfter, double ReadBefore, double ReadAfter, double DefragSeconds, long UsedBefore, long UsedAfter, string Note);

    public static string Run(BenchContext ctx)
    {
        long size = ctx.Quick ? 128L * MiB : 1024L * MiB;
        var order = Enumerable.Range(0, (int)(size / Chunk)).OrderBy(new Random(1).Next).ToArray();
        ctx.Progress($"defrag: cowfish, two {Fmt.MB(size)} files filled in shuffled 64 KiB chunks");
        var cow = Cowfish(ctx, size, order);
        Figures? btrfs = null;
        string? note = LoopFs.Preflight();
        if (note is null && Shell.Which("filefrag") is null) note = "filefrag is missing (apt-get install -y e2fsprogs)";
        if (note is null)
        {
            ctx.Progress("defrag: btrfs");
            btrfs = Btrfs(ctx, size, order);
        }
        return Report(ctx, size, cow, btrfs, note);
    }

    private static byte[] ChunkData(int file, int index)
    {
        var d = new byte[Chunk];
        new Random(file * 1_000_003 + index).NextBytes(d);
        return d;
    }

    private static double ReadAll(long size, Func<long, Memory<byte>, int> read)
    {
        var buf = new byte[MiB];
        var sw = Stopwatch.StartNew();
        for (long off = 0; off < size;)
        {
            int n = read(off, buf);
            if (n <= 0) throw new IOException($"short read at {off}");
            off += n;
        }
        return size / sw.Elapsed.TotalSeconds;
    }

    private static string Hash(FileSystem fs, string path)
    {
        var h = fs.OpenFile(path);
        return RelocateBench.Hash((off, buf) => h.Read(off, buf.Span));
    }

    private static Figures Cowfish(BenchContext ctx, long size, int[] order)
    {
        string pool = ctx.TempPath("defrag.pool");
        try
        {
            using var fs = FileSystem.Create(pool);
            fs.CreateVolume("v");
            fs.CreateFile("v/vm");
            fs.CreateFile("v/other");
            foreach (int i in order)
            {
                fs.Write("v/vm", (long)i * Chunk, ChunkData(1, i));
                fs.Write("v/other", (long)i * Chunk, ChunkData(2, i));
            }
            fs.Flush();
            fs.Snapshot("v", "snap", readOnly: true);
            fs.Flush();
            string hash = Hash(fs, "v/vm"), snapHash = Hash(fs, "snap/vm");
            int fragBefore = fs.Fragments("v/vm");
            long usedBefore = (long)fs.Pool.Space.CountAllocated() * Format.Layout.BlockSize;
            var shared = fs.Usage().SharedBytes;

            double Read()
            {
                // As for btrfs: sync and drop every cache (a per-file DONTNEED can leave pages the defrag just wrote).
                RelocateBench.DropCaches();
                Native.DropCache(pool);
                var h = fs.OpenFile("v/vm");
                return ReadAll(size, (off, buf) => h.Read(off, buf.Span));
            }
            double readBefore = Read();
            ctx.Progress("defrag: cowfish defrag");
            var sw = Stopwatch.StartNew();
            var r = Defragmenter.Defragment(fs, "v/vm");
            double seconds = sw.Elapsed.TotalSeconds;
            double readAfter = Read();
            long usedAfter = (long)fs.Pool.Space.CountAllocated() * Format.Layout.BlockSize;
            var report = PoolChecker.Check(fs.Pool);
            if (!report.IsClean) throw new InvalidOperationException($"defrag: check found {report.Faults.Count} fault(s):\n  " + string.Join("\n  ", report.Faults.Take(20)));
            if (Hash(fs, "v/vm") != hash || Hash(fs, "snap/vm") != snapHash) throw new InvalidOperationException("defrag: the image's bytes changed");
            if (fs.Usage().SharedBytes != shared) throw new InvalidOperationException($"defrag: shared bytes went from {shared} to {fs.Usage().SharedBytes}");
            return new Figures(fragBefore, r.FragmentsAfter, readBefore, readAfter, seconds, usedBefore, usedAfter,
                $"{Fmt.MB(r.SharedBytesMoved)} of shared extents moved (sharing kept: {Fmt.MB(shared)} shared before and after), {Fmt.MB(r.BytesRewritten)} rewritten; check clean, SHA-256 of the image and its snapshot copy unchanged");
        }
        finally { File.Delete(pool); }
    }

    private static unsafe Figures Btrfs(BenchContext ctx, long size, int[] order)
    {
        using var lf = LoopFs.Create("btrfs", ctx.TempPath("defrag-btrfs.img"), 4 * size + 1024L * MiB, ctx.TempPath("defrag-btrfs-mnt"));
        string vm = Path.Combine(lf.DataDir, "vm"), other = Path.Combine(lf.DataDir, "other");
        File.WriteAllBytes(vm, []);
        File.WriteAllBytes(other, []);
        void* buf = NativeMemory.AlignedAlloc(Chunk, 4096);
        try
        {
            using var a = Native.OpenDirect(vm);
            using var b = Native.OpenDirect(other);
            var span = new Span<byte>(buf, Chunk);
            foreach (int i in order)
            {
                ChunkData(1, i).CopyTo(span);
                RandomAccess.Write(a, span, (long)i * Chunk);
                ChunkData(2, i).CopyTo(span);
                RandomAccess.Write(b, span, (long)i * Chunk);
            }
        }
        finally { NativeMemory.AlignedFree(buf); }
        Native.SyncFs(lf.Mount);
        Native.BtrfsSnapshot(lf.DataDir, lf.Mount, "snap", readOnly: true);
        Shell.Run("btrfs", "filesystem", "sync", lf.Mount);
        int fragBefore = Filefrag(vm);
        long usedBefore = RelocateBench.DfUsed(lf.Mount).Data;

        double Read()
        {
            RelocateBench.DropCaches();
            using var h = File.OpenHandle(vm, FileMode.Open, FileAccess.Read);
            return ReadAll(size, (off, m) => RandomAccess.Read(h, m.Span, off));
        }
        double readBefore = Read();
        ctx.Progress("defrag: btrfs filesystem defragment");
        var sw = Stopwatch.StartNew();
        Shell.Run("btrfs", "filesystem", "defragment", "-f", vm);
        Shell.Run("btrfs", "filesystem", "sync", lf.Mount);
        double seconds = sw.Elapsed.TotalSeconds;
        int fragAfter = Filefrag(vm);
        long usedAfter = RelocateBench.DfUsed(lf.Mount).Data;
        double readAfter = Read();
        return new Figures(fragBefore, fragAfter, readBefore, readAfter, seconds, usedBefore, usedAfter,
            "`btrfs filesystem defragment -f`, then `btrfs filesystem sync` (timed together); space is `btrfs filesystem df` data used");
    }

    /// <summary>Physically contiguous runs of a file, as <c>filefrag</c> counts them.</summary>
    private static int Filefrag(string path)
    {
        string o = Shell.Run("filefrag", path);
        var m = Regex.Match(o, @":\s+(\d+) extents? found");
        if (!m.Success) throw new IOException($"cannot parse filefrag: {o}");
        return int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    private static string Report(BenchContext ctx, long size, Figures cow, Figures? btrfs, string? note)
    {
        var sb = new StringBuilder();
        sb.AppendLine("### defrag").AppendLine();
        sb.AppendLine($"Layout: two {Fmt.MB(size)} files (a VM image and a neighbour) filled in 64 KiB chunks of random data, in one shuffled order, "
            + "a chunk of each in turn (btrfs: O_DIRECT writes); then a read-only snapshot of the volume (subvolume), which shares every extent of the image. "
            + "Defrag of the image. Cold reads: the page cache dropped first, 1 MiB reads in order.").AppendLine();
        var t = new Table("", "fragments before → after", "cold sequential read before", "after", "after / before", "defrag time", "image MB / s", "space in use before → after");
        void Row(string who, Figures f) => t.Add(who, $"{Fmt.Count(f.FragmentsBefore)} → {Fmt.Count(f.FragmentsAfter)}", Fmt.MBps(f.ReadBefore), Fmt.MBps(f.ReadAfter),
            Fmt.Ratio(f.ReadAfter / f.ReadBefore), Fmt.Time(f.DefragSeconds), Fmt.MBps(size / f.DefragSeconds), $"{Fmt.MB(f.UsedBefore)} → {Fmt.MB(f.UsedAfter)}");
        Row("Cowfish", cow);
        if (btrfs is not null) Row("btrfs", btrfs);
        sb.Append(t).AppendLine();
        sb.AppendLine($"Cowfish: {cow.Note}.").AppendLine();
        if (btrfs is null)
        {
            sb.AppendLine($"btrfs: not run ({note}).").AppendLine();
            ctx.Key("defrag", "defrag of a shared 64 KiB-fragmented image", Fmt.Time(cow.DefragSeconds), "n/a", "btrfs not run");
            return sb.ToString();
        }
        sb.AppendLine($"btrfs: {btrfs.Note}.").AppendLine();
        double speed = btrfs.DefragSeconds / cow.DefragSeconds;
        double cowGrowth = (cow.UsedAfter - cow.UsedBefore) / (double)size, btrfsGrowth = (btrfs.UsedAfter - btrfs.UsedBefore) / (double)size;
        sb.AppendLine($"Ratio Cowfish / btrfs: defrag speed {Fmt.Ratio(speed)} (above 1 is faster); cold read after defrag {Fmt.Ratio(cow.ReadAfter / btrfs.ReadAfter)}; "
            + $"space the defrag added, as a share of the image: Cowfish {Fmt.Num(cowGrowth * 100, "0.0")} %, btrfs {Fmt.Num(btrfsGrowth * 100, "0.0")} % "
            + "(btrfs defrag is not snapshot-aware: it unshares what it rewrites).").AppendLine();
        ctx.Key("defrag", "defrag of a shared 64 KiB-fragmented image, time", Fmt.Time(cow.DefragSeconds), Fmt.Ratio(speed) + " of btrfs speed", "≥ btrfs, sharing kept");
        ctx.Key("defrag", "space added by the defrag / image size", Fmt.Num(cowGrowth * 100, "0.0") + " %", $"btrfs {Fmt.Num(btrfsGrowth * 100, "0.0")} %", "0 % (sharing kept)");
        return sb.ToString();
    }
}
