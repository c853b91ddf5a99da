using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Cowfish.Checking;
using Cowfish.Files;
using Cowfish.Relocation;

namespace Cowfish.Bench;

/// <summary>
/// Compaction of scattered free space, against <c>btrfs balance start -dusage=25</c> (which
/// relocates the data block groups at most a quarter full) on a loop device. The same layout on
/// both sides: 256 files of 4 MiB (32 with --quick) filled 64 KiB at a time in turn (btrfs with
/// O_DIRECT, so that every region holds pieces of 64 files), four of every five deleted, a reflink
/// clone of one survivor and a read-only snapshot. Measured: the compaction's time and the data
/// it moved; the free space in long runs before and after (Cowfish: idle runs of at least 1 MiB;
/// btrfs: unallocated device space, the room for new block groups). Cowfish ends with check, and
/// every surviving file's bytes compared.
/// </summary>
internal static class CompactBench
{
    private const int MiB = 1 << 20;
    private const int Chunk = 64 * 1024;
    private const long FileBytes = 4L * MiB;
    private const long ProbeBytes = 64L * MiB;

    private sealed record Figures(double Seconds, long Moved, long FreeBefore, long FreeAfter, string Note);

    public static string Run(BenchContext ctx)
    {
        int files = ctx.Quick ? 32 : 256;
        ctx.Progress($"compact: cowfish, {files} files of 4 MiB, four of five deleted");
        var cow = Cowfish(ctx, files);
        Figures? btrfs = null;
        string? note = LoopFs.Preflight();
        if (note is null)
        {
            ctx.Progress("compact: btrfs");
            btrfs = Btrfs(ctx, files);
        }
        return Report(ctx, files, cow, btrfs, note);
    }

    private static byte[] ChunkData(int file, int index)
    {
        var d = new byte[Chunk];
        new Random(file * 7919 + index).NextBytes(d);
        return d;
    }

    private static bool Survives(int f) => f % 5 == 0;

    private static Figures Cowfish(BenchContext ctx, int files)
    {
        string pool = ctx.TempPath("compact.pool");
        try
        {
            using var fs = FileSystem.Create(pool);
            fs.CreateVolume("v");
            for (int f = 0; f < files; f++) fs.CreateFile($"v/f{f}");
            for (int c = 0; c < FileBytes / Chunk; c++)
                for (int f = 0; f < files; f++) fs.Write($"v/f{f}", (long)c * Chunk, ChunkData(f, c));
            for (int f = 0; f < files; f++) if (!Survives(f)) fs.Remove($"v/f{f}");
            fs.Clone("v/f0", "v/c0");
            fs.Snapshot("v", "snap", readOnly: true);
            fs.Reclaim();
            fs.Flush();
            var usage = fs.Usage();
            ctx.Progress("compact: cowfish compaction");
            var sw = Stopwatch.StartNew();
            var r = PoolRelocator.Compact(fs);
            double seconds = sw.Elapsed.TotalSeconds;
            var report = PoolChecker.Check(fs.Pool);
            if (!report.IsClean) throw new InvalidOperationException($"compact: check found {report.Faults.Count} fault(s):\n  " + string.Join("\n  ", report.Faults.Take(20)));
            if (fs.Usage() != usage) throw new InvalidOperationException($"compact: space use changed: {usage} -> {fs.Usage()}");
            var buf = new byte[Chunk];
            foreach (var vol in new[] { "v", "snap" })
                for (int f = 0; f < files; f += 5)
                    for (int c = 0; c < FileBytes / Chunk; c++)
                    {
                        fs.OpenFile($"{vol}/f{f}").Read((long)c * Chunk, buf);
                        if (!buf.AsSpan().SequenceEqual(ChunkData(f, c))) throw new InvalidOperationException($"compact: {vol}/f{f} differs at chunk {c}");
                    }
            return new Figures(seconds, r.DataBlocksMoved * Format.Layout.BlockSize, (long)r.FreeBefore.Blocks * Format.Layout.BlockSize, (long)r.FreeAfter.Blocks * Format.Layout.BlockSize,
                $"{r.Regions} regions of 4 MiB emptied in {r.Slices} slices, {Fmt.Count(r.NodesRewritten)} tree nodes rewritten; longest free run "
                + $"{Fmt.MB(r.FreeBefore.Longest * (double)Format.Layout.BlockSize)} → {Fmt.MB(r.FreeAfter.Longest * (double)Format.Layout.BlockSize)}; "
                + "check clean, space use (total, exclusive, shared) unchanged, every surviving file and its snapshot copy read back");
        }
        finally { File.Delete(pool); }
    }

    private static unsafe Figures Btrfs(BenchContext ctx, int files)
    {
        long bytes = files * FileBytes;
        using var lf = LoopFs.Create("btrfs", ctx.TempPath("compact-btrfs.img"), Math.Max(4L * bytes, 2048L * MiB) + 1024L * MiB, ctx.TempPath("compact-btrfs-mnt"));
        string P(string n) => Path.Combine(lf.DataDir, n);
        void* buf = NativeMemory.AlignedAlloc(Chunk, 4096);
        try
        {
            var handles = new List<Microsoft.Win32.SafeHandles.SafeFileHandle>();
            for (int f = 0; f < files; f++)
            {
                File.WriteAllBytes(P($"f{f}"), []);
                handles.Add(Native.OpenDirect(P($"f{f}")));
            }
            var span = new Span<byte>(buf, Chunk);
            for (int c = 0; c < FileBytes / Chunk; c++)
                for (int f = 0; f < files; f++)
                {
                    ChunkData(f, c).CopyTo(span);
                    RandomAccess.Write(handles[f], span, (long)c * Chunk);
                }
            foreach (var h in handles) h.Dispose();
            for (int f = 0; f < files; f++) if (!Survives(f)) File.Delete(P($"f{f}"));
            Shell.Run("cp", "--reflink=always", P("f0"), P("c0"));
            Native.SyncFs(lf.Mount);
            Native.BtrfsSnapshot(lf.DataDir, lf.Mount, "snap", readOnly: true);
            Shell.Run("btrfs", "filesystem", "sync", lf.Mount);
            long freeBefore = RelocateBench.DeviceFigure(lf.Mount, "Device unallocated");
            long usedBefore = RelocateBench.DfUsed(lf.Mount).Data;
            ctx.Progress("compact: btrfs balance -dusage=25");
            var sw = Stopwatch.StartNew();
            string said = Shell.Run("btrfs", "balance", "start", "-dusage=25", lf.Mount);
            double seconds = sw.Elapsed.TotalSeconds;
            long freeAfter = RelocateBench.DeviceFigure(lf.Mount, "Device unallocated");
            var relocated = Regex.Match(said, @"relocate (\d+) out of (\d+) chunks");
            return new Figures(seconds, usedBefore, freeBefore, freeAfter,
                $"`btrfs balance start -dusage=25` ({(relocated.Success ? $"{relocated.Groups[1].Value} of {relocated.Groups[2].Value} chunks relocated" : said.Trim())}); "
                + "data moved is `btrfs filesystem df` data used (every data chunk was under a quarter full); free space is unallocated device space");
        }
        finally { NativeMemory.AlignedFree(buf); }
    }

    private static string Report(BenchContext ctx, int files, Figures cow, Figures? btrfs, string? note)
    {
        var sb = new StringBuilder();
        sb.AppendLine("### compact").AppendLine();
        sb.AppendLine($"Layout: {files} files of 4 MiB filled 64 KiB at a time in turn (btrfs: O_DIRECT), four of every five deleted, a reflink clone of one survivor, "
            + "a read-only snapshot.").AppendLine();
        var t = new Table("", "compaction", "data moved", "time", "free space in long runs before → after");
        void Row(string who, string what, string moved, Figures f) => t.Add(who, what, moved, Fmt.Time(f.Seconds), $"{Fmt.MB(f.FreeBefore)} → {Fmt.MB(f.FreeAfter)}");
        Row("Cowfish", "`PoolRelocator.Compact` (`relocate --compact`)", $"{Fmt.MB(cow.Moved)} ({Fmt.MBps(cow.Moved / cow.Seconds)})", cow);
        if (btrfs is not null) Row("btrfs", "`balance start -dusage=25`", $"at most {Fmt.MB(btrfs.Moved)} (all data in use)", btrfs);
        sb.Append(t).AppendLine();
        sb.AppendLine($"Cowfish: {cow.Note}; free space in long runs = idle runs of at least 1 MiB.").AppendLine();
        if (btrfs is null)
        {
            sb.AppendLine($"btrfs: not run ({note}).").AppendLine();
            ctx.Key("compact", "compaction of scattered free space, time", Fmt.Time(cow.Seconds), "n/a", "btrfs not run");
            return sb.ToString();
        }
        sb.AppendLine($"btrfs: {btrfs.Note}.").AppendLine();
        sb.AppendLine($"Ratio Cowfish / btrfs: time {Fmt.Ratio(btrfs.Seconds / cow.Seconds)} (above 1 is faster).").AppendLine();
        ctx.Key("compact", "compaction of scattered free space, time", Fmt.Time(cow.Seconds), Fmt.Ratio(btrfs.Seconds / cow.Seconds) + " of btrfs balance -dusage=25 speed", "≥ btrfs");
        return sb.ToString();
    }
}
