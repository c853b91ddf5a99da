using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Cowfish.Checking;
using Cowfish.Files;
using Cowfish.Format;
using Cowfish.Relocation;
using Cowfish.Streams;

namespace Cowfish.Bench;

/// <summary>
/// Relocation against btrfs balance and resize. Both sides get the same layout: a filler file
/// written first, then the live data (a large file, a reflink clone of it with 10 % overwritten,
/// two more files, a small file a writer thread uses), the filler deleted and its space given
/// back, and a read-only snapshot; so the live data sits in the upper part of the pool (device).
/// Measured: (1) relocation to used + margin with shrink (Cowfish: <see cref="PoolRelocator"/>
/// with <see cref="PoolRelocator.CompactTarget"/>; btrfs: <c>filesystem resize</c> to a similar
/// size, then a full <c>balance -d -m</c>), data bytes moved per second; (2) a full send of the
/// snapshot alone and while a relocation (balance) runs; (3) the worst latency of a thread doing
/// 4 KiB writes during the relocation (balance). Every Cowfish relocation ends with check and a
/// hash of every file; any difference fails the benchmark.
/// </summary>
internal static class RelocateBench
{
    private const int MiB = 1 << 20;
    private const int Block = 4096;
    private const long WriterFileBytes = 16L * MiB;

    /// <summary>The layout: sizes in bytes; the clone has every tenth MiB overwritten.</summary>
    private sealed record Sizes(long Filler, long Big, long Other, int OtherFiles)
    {
        public long CloneOverwritten => Big / MiB / 10 * MiB;
        public long Live => Big + CloneOverwritten + Other * OtherFiles + WriterFileBytes;
        /// <summary>Logical bytes of the snapshot (what a send reads; the clone counts in full).</summary>
        public long SnapshotBytes => Big * 2 + Other * OtherFiles + WriterFileBytes;
    }

    /// <summary>Latencies of the writer thread, split by whether the write overlapped the relocation.</summary>
    private sealed record WriterFigures(int After, double MedianAfter, int During, double MedianDuring, double P99During, double WorstDuring);

    private sealed record CowFigures(
        long BytesBefore, long BytesAfter, ulong BlocksAfterShrink, ulong UsedBlocks, ulong TargetBlocks, long DataMoved, long NodesRewritten, int Passes, int Slices,
        double RelocSeconds, WriterFigures Writer,
        double SendAlone, long StreamBytes, double SendDuring, double RelocDuringSeconds, double Overlap, long DataMovedDuring);

    private sealed record BtrfsFigures(
        long DataUsed, long MetaUsed, long DevBefore, long DevAfterResize, long ResizeTarget, double ResizeSeconds, string? ResizeError,
        double BalanceSeconds, int BalanceFailures, WriterFigures Writer,
        double SendAlone, long StreamBytes, double? SendDuring, string SendDuringNote, double BalanceDuringSeconds, double Overlap);

    public static string Run(BenchContext ctx)
    {
        var sizes = ctx.Quick
            ? new Sizes(Filler: 256L * MiB, Big: 128L * MiB, Other: 48L * MiB, OtherFiles: 2)
            : new Sizes(Filler: 1024L * MiB, Big: 512L * MiB, Other: 192L * MiB, OtherFiles: 2);

        ctx.Progress($"relocate: cowfish, {Fmt.MB(sizes.Live)} live behind a {Fmt.MB(sizes.Filler)} filler");
        var cow = Cowfish(ctx, sizes);
        BtrfsFigures? btrfs = null;
        string? btrfsNote = LoopFs.Preflight();
        if (btrfsNote is null)
        {
            ctx.Progress("relocate: btrfs");
            btrfs = Btrfs(ctx, sizes);
        }
        return Report(ctx, sizes, cow, btrfs, btrfsNote);
    }

    private static string Report(BenchContext ctx, Sizes sizes, CowFigures cow, BtrfsFigures? btrfs, string? btrfsNote)
    {
        var sb = new StringBuilder();
        sb.AppendLine("### relocate").AppendLine();
        sb.AppendLine($"Layout: a {Fmt.MB(sizes.Filler)} filler written first; then a {Fmt.MB(sizes.Big)} file, a reflink clone of it with every tenth MiB overwritten "
            + $"({Fmt.MB(sizes.CloneOverwritten)}), {sizes.OtherFiles} files of {Fmt.MB(sizes.Other)} and a {Fmt.MB(WriterFileBytes)} file for the writer thread "
            + $"({Fmt.MB(sizes.Live)} of live data); the filler deleted and reclaimed (btrfs: `balance start -dusage=0` drops the emptied chunks); a read-only snapshot. "
            + "Random data, 1 MiB writes. Caches dropped before each timed run.").AppendLine();

        sb.AppendLine("#### 1. Relocation to used + margin, and shrink").AppendLine();
        double cowRate = cow.DataMoved * (double)Block / cow.RelocSeconds;
        var t = new Table("", "operation", "data moved", "time", "data moved / s", "size before", "size after");
        t.Add("Cowfish", $"`Relocate(fs, CompactTarget, GrowTarget)` (passes: {cow.Passes} in {Fmt.Count(cow.Slices)} slices; tree nodes rewritten: {Fmt.Count(cow.NodesRewritten)})",
            Fmt.MB(cow.DataMoved * (double)Block), Fmt.Time(cow.RelocSeconds), Fmt.MBps(cowRate), Fmt.MB(cow.BytesBefore), Fmt.MB(cow.BytesAfter));
        if (btrfs is not null)
        {
            t.Add("btrfs", $"`filesystem resize {Fmt.MB(btrfs.ResizeTarget)}`", "the chunks past the target",
                double.IsNaN(btrfs.ResizeSeconds) ? "failed" : Fmt.Time(btrfs.ResizeSeconds), "n/a (not reported)",
                Fmt.MB(btrfs.DevBefore), Fmt.MB(btrfs.DevAfterResize));
            t.Add("btrfs", "`balance start -d -m` (full)" + (btrfs.BalanceFailures > 0 ? $", {btrfs.BalanceFailures + 1} runs: the first {btrfs.BalanceFailures} ended with ENOSPC" : ""), Fmt.MB(btrfs.DataUsed) + " data, " + Fmt.MB(btrfs.MetaUsed) + " metadata",
                Fmt.Time(btrfs.BalanceSeconds), Fmt.MBps(btrfs.DataUsed / btrfs.BalanceSeconds), "", "");
        }
        sb.Append(t).AppendLine();
        sb.AppendLine($"Cowfish: {Fmt.Count((long)cow.UsedBlocks)} blocks in use, target {Fmt.Count((long)cow.TargetBlocks)} blocks ({Fmt.MB(cow.TargetBlocks * (double)Block)}); "
            + $"the relocation left the pool at {Fmt.MB(cow.BlocksAfterShrink * (double)Block)}, and the size after is the file's once the writer's second after it had run "
            + "(its copy-on-write writes, whose frees wait for durability, can grow the pool again); "
            + "check clean and every file's SHA-256 unchanged after the relocation.").AppendLine();
        if (btrfs is not null)
        {
            if (btrfs.ResizeError is not null) sb.AppendLine($"btrfs resize: smaller targets failed first ({btrfs.ResizeError}); the time counts every attempt.").AppendLine();
            sb.AppendLine($"Ratio Cowfish / btrfs, data moved per second: {Fmt.Ratio(cowRate / (btrfs.DataUsed / btrfs.BalanceSeconds))} of the full balance"
                + (double.IsNaN(btrfs.ResizeSeconds) ? "" : $"; time to shrink to used + margin: {Fmt.Ratio(btrfs.ResizeSeconds / cow.RelocSeconds)} of btrfs resize") + " (above 1 is faster).").AppendLine();
        }

        sb.AppendLine("#### 2. Full send of the snapshot, alone and during a relocation").AppendLine();
        sb.AppendLine($"MB/s are the snapshot's logical bytes ({Fmt.MB(sizes.SnapshotBytes)}, the clone counted in full) over the send's time; both streams keep the clone as a clone.").AppendLine();
        var s = new Table("", "stream", "send alone", "send during relocation", "during / alone", "relocation (balance) alongside", "overlap");
        s.Add("Cowfish", Fmt.MB(cow.StreamBytes), Fmt.MBps(sizes.SnapshotBytes / cow.SendAlone), Fmt.MBps(sizes.SnapshotBytes / cow.SendDuring),
            Fmt.Ratio(cow.SendAlone / cow.SendDuring), $"{Fmt.MB(cow.DataMovedDuring * (double)Block)} moved in {Fmt.Time(cow.RelocDuringSeconds)}", Fmt.Num(cow.Overlap * 100, "0") + " % of the send");
        if (btrfs is not null)
            s.Add("btrfs", Fmt.MB(btrfs.StreamBytes), Fmt.MBps(sizes.SnapshotBytes / btrfs.SendAlone),
                btrfs.SendDuring is { } d ? Fmt.MBps(sizes.SnapshotBytes / d) : "failed: " + btrfs.SendDuringNote,
                btrfs.SendDuring is { } d2 ? Fmt.Ratio(btrfs.SendAlone / d2) : "n/a", $"full balance, {Fmt.Time(btrfs.BalanceDuringSeconds)}", Fmt.Num(btrfs.Overlap * 100, "0") + " % of the send");
        sb.Append(s).AppendLine();
        if (btrfs is not null)
        {
            sb.AppendLine($"btrfs send during balance on this kernel ({Environment.OSVersion.Version}): {btrfs.SendDuringNote}.").AppendLine();
            if (btrfs.SendDuring is { } d3)
                sb.AppendLine($"Ratio Cowfish / btrfs: send alone {Fmt.Ratio(btrfs.SendAlone / cow.SendAlone)}, send during relocation {Fmt.Ratio(d3 / cow.SendDuring)} (above 1 is faster).").AppendLine();
        }

        sb.AppendLine("#### 3. A writer during the relocation (4 KiB writes at random offsets of a 16 MiB file, one thread)").AppendLine();
        sb.AppendLine("Cowfish: `FileHandle.Write` (not durable: mapped in a transaction, durable at the next flush). btrfs: buffered `pwrite`. "
            + "\"After\" is the same thread in the second after the relocation (balance) ended: the baseline.").AppendLine();
        var w = new Table("", "writes during", "median during", "p99 during", "worst during", "writes in 1 s after", "median after", "worst during / median after");
        void Row(string name, WriterFigures f) => w.Add(name, Fmt.Count(f.During), Fmt.Time(f.MedianDuring), Fmt.Time(f.P99During), Fmt.Time(f.WorstDuring),
            Fmt.Count(f.After), Fmt.Time(f.MedianAfter), Fmt.Ratio(f.WorstDuring / f.MedianAfter));
        Row("Cowfish (relocate)", cow.Writer);
        if (btrfs is not null) Row("btrfs (full balance)", btrfs.Writer);
        sb.Append(w).AppendLine();
        if (btrfsNote is not null) sb.AppendLine($"btrfs not measured: {btrfsNote}").AppendLine();

        ctx.Key("relocate", "data moved / s", Fmt.MBps(cowRate), btrfs is null ? "n/a" : Fmt.Ratio(cowRate / (btrfs.DataUsed / btrfs.BalanceSeconds)) + " of btrfs balance",
            btrfs is null ? "" : "btrfs balance: " + Fmt.MBps(btrfs.DataUsed / btrfs.BalanceSeconds));
        ctx.Key("relocate", "send during relocation", Fmt.MBps(sizes.SnapshotBytes / cow.SendDuring), Fmt.Ratio(cow.SendAlone / cow.SendDuring) + " of send alone", "never fails");
        ctx.Key("relocate", "worst 4 KiB write during relocation", Fmt.Time(cow.Writer.WorstDuring),
            btrfs is null ? "n/a" : Fmt.Ratio(cow.Writer.WorstDuring / btrfs.Writer.WorstDuring) + $" of btrfs balance's ({Fmt.Time(btrfs.Writer.WorstDuring)}; lower is better)", "≤ 10 ms (passes not sliced yet)");
        return sb.ToString();
    }

    // --- data ----------------------------------------------------------------------------------

    /// <summary>Writes <paramref name="size"/> bytes of seeded random data, 1 MiB at a time.</summary>
    private static void Fill(Action<long, byte[]> write, long size, int seed)
    {
        var chunk = new byte[MiB];
        var rng = new Random(seed);
        for (long off = 0; off < size; off += MiB)
        {
            rng.NextBytes(chunk);
            write(off, chunk);
        }
    }

    /// <summary>Overwrites every tenth MiB of the clone (10 %), so that it shares 90 % with its source.</summary>
    private static void Overwrite(Action<long, byte[]> write, long size) =>
        Fill((off, data) => { if (off / MiB % 10 == 5) write(off, data); }, size, 99);

    private static IEnumerable<(string Name, long Size, int Seed)> DataFiles(Sizes s)
    {
        yield return ("big", s.Big, 1);
        for (int i = 0; i < s.OtherFiles; i++) yield return ($"o{i}", s.Other, 10 + i);
        yield return ("w", WriterFileBytes, 20);
    }

    internal static void DropCaches()
    {
        if (!Native.IsRoot) return;
        Shell.Run("sync");
        File.WriteAllText("/proc/sys/vm/drop_caches", "3");
    }

    internal static string Hash(Func<long, Memory<byte>, int> read)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[MiB];
        for (long off = 0; ; )
        {
            int n = read(off, buf);
            if (n <= 0) break;
            h.AppendData(buf, 0, n);
            off += n;
        }
        return Convert.ToHexString(h.GetHashAndReset());
    }

    // --- Cowfish ---------------------------------------------------------------------------------

    /// <summary>Builds the layout in a new pool; returns it open.</summary>
    private static FileSystem CowLayout(string path, Sizes s)
    {
        var fs = FileSystem.Create(path);
        try
        {
            fs.CreateVolume("v");
            fs.CreateFile("v/filler");
            Fill((off, d) => fs.Write("v/filler", off, d), s.Filler, 0);
            fs.Flush();
            foreach (var (name, size, seed) in DataFiles(s))
            {
                fs.CreateFile("v/" + name);
                Fill((off, d) => fs.Write("v/" + name, off, d), size, seed);
            }
            fs.Clone("v/big", "v/clone");
            Overwrite((off, d) => fs.Write("v/clone", off, d), s.Big);
            fs.Remove("v/filler");
            fs.Flush();
            fs.Snapshot("v", "snap", readOnly: true);
            fs.Reclaim();
            fs.Flush();
            return fs;
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    /// <summary>SHA-256 of every file of the snapshot and of the live volume but the writer's file.</summary>
    private static Dictionary<string, string> CowHashes(FileSystem fs, Sizes s)
    {
        var all = new Dictionary<string, string>();
        foreach (var vol in new[] { "v", "snap" })
        {
            foreach (var name in DataFiles(s).Select(f => f.Name).Append("clone"))
            {
                string p = $"{vol}/{name}";
                if (vol == "v" && name == "w") continue; // the writer thread changes it
                var h = fs.OpenFile(p);
                all[p] = Hash((off, buf) => h.Read(off, buf.Span));
            }
        }
        return all;
    }

    private static void Verify(FileSystem fs, Sizes s, Dictionary<string, string> before, string when)
    {
        var report = PoolChecker.Check(fs.Pool);
        if (!report.IsClean)
            throw new InvalidOperationException($"relocate: check after {when} found {report.Faults.Count} fault(s):\n  " + string.Join("\n  ", report.Faults.Take(20)));
        var after = CowHashes(fs, s);
        foreach (var (p, h) in before)
        {
            if (after[p] != h) throw new InvalidOperationException($"relocate: {p} changed across {when}: SHA-256 {h} before, {after[p]} after");
        }
    }

    private static CowFigures Cowfish(BenchContext ctx, Sizes s)
    {
        string pa = ctx.TempPath("reloc-a.pool"), pb = ctx.TempPath("reloc-b.pool");
        try
        {
            // Pool A: relocation with a writer alongside (figures 1 and 3).
            long bytesBefore, bytesAfter;
            ulong used, target;
            RelocationResult r;
            double relocSeconds;
            WriterFigures writer;
            using (var fs = CowLayout(pa, s))
            {
                var hashes = CowHashes(fs, s);
                bytesBefore = new FileInfo(pa).Length;
                used = fs.Pool.Space.CountAllocated();
                target = PoolRelocator.CompactTarget(fs);
                ctx.Progress($"relocate: cowfish pool {Fmt.MB(bytesBefore)}, {Fmt.MB(used * (double)Block)} used, {Fmt.MB(PoolRelocator.BlocksToMove(fs, target) * (double)Block)} past the target");
                DropCaches();
                var h = fs.OpenFile("v/w");
                (r, relocSeconds, writer) = WithWriter((off, buf) => h.Write(off, buf), () => PoolRelocator.Relocate(fs, target, new RelocationOptions { GrowTarget = true }));
                bytesAfter = new FileInfo(pa).Length;
                if (!r.Shrunk || bytesAfter >= bytesBefore)
                    throw new InvalidOperationException($"relocate: the pool did not shrink ({bytesBefore} → {bytesAfter} bytes, {r})");
                Verify(fs, s, hashes, "the relocation with a writer");
            }
            File.Delete(pa);

            // Pool B, the same layout: a full send alone, then one started just after a relocation.
            ctx.Progress("relocate: cowfish send alone and during a relocation");
            using (var fs = CowLayout(pb, s))
            {
                var hashes = CowHashes(fs, s);
                DropCaches();
                var counter = new CountingStream();
                var sw = Stopwatch.StartNew();
                SendStream.Write(fs, "snap", null, counter);
                double alone = sw.Elapsed.TotalSeconds;

                ulong t2 = PoolRelocator.CompactTarget(fs);
                DropCaches();
                long start = Stopwatch.GetTimestamp();
                var reloc = Task.Factory.StartNew(() =>
                {
                    var res = PoolRelocator.Relocate(fs, t2, new RelocationOptions { GrowTarget = true });
                    return (res, End: Stopwatch.GetTimestamp());
                }, TaskCreationOptions.LongRunning);
                var during = new CountingStream();
                long sendStart = Stopwatch.GetTimestamp();
                SendStream.Write(fs, "snap", null, during);
                long sendEnd = Stopwatch.GetTimestamp();
                var (res, relocEnd) = reloc.GetAwaiter().GetResult();
                if (during.Bytes != counter.Bytes)
                    throw new InvalidOperationException($"relocate: the send during relocation wrote {during.Bytes} bytes, alone {counter.Bytes}");
                Verify(fs, s, hashes, "the relocation during a send");
                double sendSec = Seconds(sendEnd - sendStart);
                double overlap = Seconds(Math.Max(0, Math.Min(relocEnd, sendEnd) - Math.Max(start, sendStart))) / sendSec;
                return new CowFigures(bytesBefore, bytesAfter, r.BlocksAfter, used, target, r.DataBlocksMoved, r.NodesRewritten, r.Passes, r.Slices, relocSeconds, writer,
                    alone, counter.Bytes, sendSec, Seconds(relocEnd - start), overlap, res.DataBlocksMoved);
            }
        }
        finally
        {
            File.Delete(pa);
            File.Delete(pb);
        }
    }

    private static double Seconds(long ticks) => ticks / (double)Stopwatch.Frequency;

    /// <summary>
    /// Runs <paramref name="work"/> while one thread does 4 KiB writes at random offsets of a
    /// 16 MiB file; the writer starts with the work and goes on for a second after it, for a
    /// baseline measured in the same run.
    /// </summary>
    /// <remarks>
    /// The baseline comes after, not before: a second of Cowfish 4 KiB writes before the
    /// relocation scatters single live blocks through the free space below the target, and the
    /// relocation (which moves each data run whole, into one free run) then finds too few free
    /// runs long enough and gives up; see docs/benchmarks.md.
    /// </remarks>
    private static (T Result, double Seconds, WriterFigures Writer) WithWriter<T>(Action<long, byte[]> write, Func<T> work)
    {
        var samples = new List<(long Start, long End)>();
        using var stop = new CancellationTokenSource();
        Exception? failed = null;
        var thread = new Thread(() =>
        {
            var rng = new Random(5);
            var buf = new byte[Block];
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    rng.NextBytes(buf);
                    long off = rng.NextInt64(WriterFileBytes / Block) * Block;
                    long t0 = Stopwatch.GetTimestamp();
                    write(off, buf);
                    samples.Add((t0, Stopwatch.GetTimestamp()));
                }
            }
            catch (Exception e) { failed = e; }
        }) { IsBackground = true, Name = "bench-writer" };
        long start = Stopwatch.GetTimestamp();
        thread.Start();
        T result;
        long end;
        try
        {
            result = work();
            end = Stopwatch.GetTimestamp();
            Thread.Sleep(1000);
        }
        finally
        {
            stop.Cancel();
            thread.Join();
        }
        if (failed is not null) throw new InvalidOperationException("relocate: the writer thread failed", failed);
        var during = samples.Where(x => x.Start < end).Select(x => Seconds(x.End - x.Start)).ToList();
        var after = samples.Where(x => x.Start >= end).Select(x => Seconds(x.End - x.Start)).ToList();
        var figures = new WriterFigures(after.Count, Stats.Median(after), during.Count, Stats.Median(during), Stats.Percentile(during, 99), Stats.Max(during));
        return (result, Seconds(end - start), figures);
    }

    // --- btrfs -----------------------------------------------------------------------------------

    private static BtrfsFigures Btrfs(BenchContext ctx, Sizes s)
    {
        long image = s.Filler + 3 * s.Live + (1L << 30);
        using var lf = LoopFs.Create("btrfs", ctx.TempPath("reloc-btrfs.img"), image, ctx.TempPath("reloc-btrfs-mnt"));
        string dir = lf.DataDir, mnt = lf.Mount;
        string P(string name) => Path.Combine(dir, name);
        void WriteFile(string path, long size, int seed, bool create = true)
        {
            using var f = new FileStream(path, create ? FileMode.CreateNew : FileMode.Open, FileAccess.Write);
            Fill((off, d) => RandomAccess.Write(f.SafeFileHandle, d, off), size, seed);
            f.Flush(flushToDisk: true);
        }
        WriteFile(P("filler"), s.Filler, 0);
        Native.SyncFs(mnt);
        foreach (var (name, size, seed) in DataFiles(s)) WriteFile(P(name), size, seed);
        Shell.Run("cp", "--reflink=always", P("big"), P("clone"));
        using (var f = new FileStream(P("clone"), FileMode.Open, FileAccess.Write))
        {
            Overwrite((off, d) => RandomAccess.Write(f.SafeFileHandle, d, off), s.Big);
            f.Flush(flushToDisk: true);
        }
        File.Delete(P("filler"));
        Native.SyncFs(mnt);
        Native.BtrfsSnapshot(dir, mnt, "snap", readOnly: true);
        Shell.Run("btrfs", "filesystem", "sync", mnt);
        // The cleaner drops emptied chunks only every commit interval; this drops them now (it moves nothing).
        Shell.Run("btrfs", "balance", "start", "-dusage=0", "-musage=0", mnt);
        string snap = Path.Combine(mnt, "snap");
        var hashes = BtrfsHashes(dir, snap, s);

        var (dataUsed, metaUsed) = DfUsed(mnt);
        long devBefore = DeviceSize(mnt);
        ctx.Progress($"relocate: btrfs {Fmt.MB(dataUsed)} data, {Fmt.MB(metaUsed)} metadata used, device {Fmt.MB(devBefore)}");

        DropCaches();
        var (sendAlone, streamBytes) = TimedSend(snap);

        // Shrink to what Cowfish's CompactTarget gives (used plus an eighth) plus 256 MiB, since
        // btrfs moves whole chunks (about a tenth of the file system here). When that fails with
        // ENOSPC, what moved stays moved and a target a quarter larger is tried; every attempt's
        // time counts.
        long used = dataUsed + 2 * metaUsed; // metadata is DUP
        long resizeTarget = (used + used / 8 + 256L * MiB) / MiB * MiB;
        string? resizeError = null;
        double resizeSeconds = 0;
        DropCaches();
        for (int attempt = 1; ; attempt++)
        {
            ctx.Progress($"relocate: btrfs resize to {Fmt.MB(resizeTarget)}");
            var sw = Stopwatch.StartNew();
            try
            {
                Shell.Run("btrfs", "filesystem", "resize", resizeTarget.ToString(System.Globalization.CultureInfo.InvariantCulture), mnt);
                resizeSeconds += sw.Elapsed.TotalSeconds;
                break;
            }
            catch (IOException e)
            {
                resizeSeconds += sw.Elapsed.TotalSeconds;
                resizeError = (resizeError is null ? "" : resizeError + "; ") + $"to {Fmt.MB(resizeTarget)}: " + (e.Message.Contains("No space left", StringComparison.Ordinal) ? "ENOSPC" : e.Message.ReplaceLineEndings(" "));
                if (attempt == 4) { resizeSeconds = double.NaN; break; }
                resizeTarget = resizeTarget / 4 * 5 / MiB * MiB;
            }
        }
        long devAfter = DeviceSize(mnt);
        // A full balance needs room for new chunks beside the old ones; at the shrunk size it fails with ENOSPC.
        Shell.Run("btrfs", "filesystem", "resize", "max", mnt);

        ctx.Progress("relocate: btrfs full balance with a writer");
        DropCaches();
        double balanceSeconds;
        WriterFigures writer;
        List<string> balanceAttempts;
        using (var wf = new FileStream(P("w"), FileMode.Open, FileAccess.Write))
        {
            // On this kernel the first full balance after the resize has ended with ENOSPC ("2 enospc
            // errors during balance") with 1.7 GB unallocated; a second one completes. Both count.
            (balanceAttempts, balanceSeconds, writer) = WithWriter((off, buf) => RandomAccess.Write(wf.SafeFileHandle, buf, off), () =>
            {
                var errors = new List<string>();
                for (int attempt = 1; ; attempt++)
                {
                    try
                    {
                        Shell.Run("btrfs", "balance", "start", "-d", "-m", mnt);
                        return errors;
                    }
                    catch (IOException e) when (attempt < 3 && e.Message.Contains("No space left", StringComparison.Ordinal))
                    {
                        ctx.Progress($"relocate: btrfs balance attempt {attempt}: ENOSPC; again");
                        errors.Add("ENOSPC");
                    }
                }
            });
        }

        ctx.Progress("relocate: btrfs send during a full balance");
        DropCaches();
        var balance = StartProcess("btrfs", "balance", "start", "-d", "-m", mnt);
        long bStart = Stopwatch.GetTimestamp();
        Thread.Sleep(300); // let the balance get going: the send must start while a chunk is being relocated
        double? sendDuring = null;
        string note;
        long sStart = Stopwatch.GetTimestamp(), sEnd;
        try
        {
            var (sec, bytes) = TimedSend(snap);
            sEnd = Stopwatch.GetTimestamp();
            sendDuring = sec;
            note = bytes == streamBytes ? "accepted, stream of the same length as alone" : $"accepted, stream {bytes} bytes (alone: {streamBytes})";
        }
        catch (IOException e)
        {
            sEnd = Stopwatch.GetTimestamp();
            note = "refused: " + e.Message.Replace('\n', ' ').Trim();
        }
        balance.WaitForExit();
        long bEnd = Stopwatch.GetTimestamp();
        bool balanceRan = Stopwatch.GetElapsedTime(bStart).TotalMilliseconds > 300;
        if (balance.ExitCode != 0) note += $"; the balance exited {balance.ExitCode}: {balance.StandardError.ReadToEnd().Trim()}";
        else if (!balanceRan) note += "; the balance had ended before the send started";
        double overlap = Seconds(Math.Max(0, Math.Min(bEnd, sEnd) - Math.Max(bStart, sStart))) / Seconds(sEnd - sStart);

        var after = BtrfsHashes(dir, snap, s);
        foreach (var (p, h) in hashes)
        {
            if (after[p] != h) throw new InvalidOperationException($"relocate: btrfs {p} changed across balance (the benchmark's fault, or the kernel's)");
        }
        return new BtrfsFigures(dataUsed, metaUsed, devBefore, devAfter, resizeTarget, resizeSeconds, resizeError, balanceSeconds, balanceAttempts.Count, writer,
            sendAlone, streamBytes, sendDuring, note, Seconds(bEnd - bStart), overlap);
    }

    private static Dictionary<string, string> BtrfsHashes(string dir, string snap, Sizes s)
    {
        var all = new Dictionary<string, string>();
        foreach (var (vol, root) in new[] { ("v", dir), ("snap", snap) })
        {
            foreach (var name in DataFiles(s).Select(f => f.Name).Append("clone"))
            {
                if (vol == "v" && name == "w") continue;
                using var f = File.OpenHandle(Path.Combine(root, name));
                all[$"{vol}/{name}"] = Hash((off, buf) => RandomAccess.Read(f, buf.Span, off));
            }
        }
        return all;
    }

    /// <summary>Times <c>btrfs send</c> of a snapshot into <c>wc -c</c>; returns the seconds and the stream's length.</summary>
    private static (double Seconds, long Bytes) TimedSend(string snap)
    {
        var sw = Stopwatch.StartNew();
        string o = Shell.Run("bash", "-o", "pipefail", "-c", $"btrfs send -q '{snap}' | wc -c");
        return (sw.Elapsed.TotalSeconds, long.Parse(o.Trim(), System.Globalization.CultureInfo.InvariantCulture));
    }

    private static Process StartProcess(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return Process.Start(psi) ?? throw new IOException($"{file} did not start");
    }

    /// <summary>Data and metadata bytes used, from <c>btrfs filesystem df -b</c>.</summary>
    internal static (long Data, long Meta) DfUsed(string mnt)
    {
        string o = Shell.Run("btrfs", "filesystem", "df", "-b", mnt);
        long Used(string kind)
        {
            var m = Regex.Match(o, $@"^{kind},[^:]*:.*used=(\d+)", RegexOptions.Multiline);
            if (!m.Success) throw new IOException($"cannot parse `btrfs filesystem df -b`: {o}");
            return long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        }
        return (Used("Data"), Used("Metadata"));
    }

    /// <summary>The file system's size on its device, from <c>btrfs filesystem usage -b</c>.</summary>
    private static long DeviceSize(string mnt) => DeviceFigure(mnt, "Device size");

    /// <summary>One byte figure of <c>btrfs filesystem usage -b</c> ("Device size", "Device allocated").</summary>
    internal static long DeviceFigure(string mnt, string name)
    {
        string o = Shell.Run("btrfs", "filesystem", "usage", "-b", mnt);
        var m = Regex.Match(o, Regex.Escape(name) + @":\s+(\d+)");
        if (!m.Success) throw new IOException($"cannot parse `btrfs filesystem usage -b`: {o}");
        return long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

}
