using System.Diagnostics;
using System.Text;
using Cowfish.Checking;
using Cowfish.Files;

namespace Cowfish.Bench;

/// <summary>
/// The files layer against the real thing, side by side in one run: XFS (reflink=1) and btrfs,
/// each on a loop device over a sparse file in the pool directory, and fio on a plain file there.
/// <list type="number">
/// <item>whole-file clone at 10^3 .. 10^6 extents: <c>FileSystem.Clone</c> vs FICLONE (what <c>cp --reflink=always</c> calls);</item>
/// <item>snapshot: <c>FileSystem.Snapshot</c> vs a btrfs subvolume snapshot;</item>
/// <item>4 KiB read and write latency on the source while the largest file is cloned, against the same load without a clone;</item>
/// <item>sequential 1 MiB write and read of a large file vs fio on a plain file;</item>
/// <item>random 4 KiB writes into a fresh clone vs fio randwrite on a reflinked copy;</item>
/// <item>sequential read after 10 % random overwrites vs the same read of the fresh file.</item>
/// </list>
/// Every Cowfish pool is checked at the end.
/// </summary>
internal static class FileBench
{
    private const int Block = 4096;
    private const int MiB = 1 << 20;

    private sealed class Config(bool quick)
    {
        public bool Quick { get; } = quick;
        public long[] Sizes { get; } = quick ? [1_000, 10_000] : [1_000, 10_000, 100_000, 1_000_000];
        public int CowfishCloneReps { get; } = quick ? 11 : 21;
        public int HostCloneReps(long n) => Quick ? 5 : n <= 10_000 ? 7 : n <= 100_000 ? 3 : 1;
        public int RangeCloneReps(long n) => Quick ? 3 : n <= 10_000 ? 5 : n <= 100_000 ? 3 : 1;
        public int SnapshotReps { get; } = quick ? 5 : 11;
        public double PhaseSeconds { get; } = quick ? 2 : 5;
        public double ReadsPerSecond => 1000;
        public double WritesPerSecond => 250;
        public long SeqBytes { get; } = quick ? 256L * MiB : 1024L * MiB;
        public int SeqReps => 3;
        public int ColdReps => 5;
        public long ImageBytes { get; } = quick ? 4L << 30 : 24L << 30;
    }

    /// <summary>A kernel file system under test.</summary>
    private sealed class Host(LoopFs fs)
    {
        public LoopFs Fs { get; } = fs;
        public string Name => Fs.Kind == "xfs" ? "XFS" : "btrfs";
        public string PathOf(string name) => Path.Combine(Fs.DataDir, name);
        public Dictionary<long, double> BuildSeconds { get; } = new();
        public Dictionary<long, long> Extents { get; } = new();
        public Dictionary<long, List<double>> Clone { get; } = new();
        public Dictionary<long, List<double>> CloneSync { get; } = new();
        public Dictionary<long, double> Cp { get; } = new();
    }

    private sealed class Latency
    {
        public required string System { get; init; }
        public required string Scenario { get; init; }
        public required double Window { get; init; }
        public required Samples Base { get; init; }
        public required Samples During { get; init; }
        public string Note { get; init; } = "";
    }

    /// <summary>Latencies of one load run, in seconds, for the ops that overlap a window.</summary>
    private sealed class Samples
    {
        public List<double> Reads { get; } = new();
        public List<double> Writes { get; } = new();
        /// <summary>The same, leaving out ops during which this process ran a garbage collection.</summary>
        public List<double> ReadsNoGc { get; } = new();
        public List<double> WritesNoGc { get; } = new();
        public double Seconds { get; init; }
        /// <summary>This process's garbage collections while the load ran: gen2 count, and total pause.</summary>
        public string Gc { get; set; } = "";
    }

    private sealed class Throughput
    {
        public List<double> Values { get; } = new();
        public double Median => Stats.Median(Values);
    }

    public static string Run(BenchContext ctx)
    {
        if (LoopFs.Preflight() is { } why) throw new BenchUnavailableException(why);
        var cfg = new Config(ctx.Quick);
        var sb = new StringBuilder();
        var hosts = new List<Host>();
        FileSystem? fragFs = null, seqFs = null;
        string fragPool = ctx.TempPath("files-frag.pool"), seqPool = ctx.TempPath("files-seq.pool");
        var total = Stopwatch.StartNew();
        try
        {
            foreach (var kind in new[] { "xfs", "btrfs" })
            {
                ctx.Progress($"files: making {kind} on a loop device");
                hosts.Add(new Host(LoopFs.Create(kind, ctx.TempPath($"files-{kind}.img"), cfg.ImageBytes,
                    $"/mnt/cowfish-bench-{Environment.ProcessId}-{kind}")));
            }
            fragFs = FileSystem.Create(fragPool);
            fragFs.CreateVolume("v");

            // --- 1. fragmented files, then whole-file clones -----------------------------------
            var build = BuildFragmented(ctx, cfg, fragFs, hosts);
            var cfClone = CloneTimes(ctx, cfg, fragFs, hosts);

            // --- 2. snapshots -----------------------------------------------------------------
            var (cfSnap, btSnap, btSnapCmd) = Snapshots(ctx, cfg, fragFs, hosts.Single(h => h.Fs.Kind == "btrfs"));

            // --- 3. latency during a clone of the largest file ---------------------------------
            var latencies = LatencyDuringClone(ctx, cfg, fragFs, hosts);
            ctx.Progress("files: check of the fragmented-files pool");
            var sw = Stopwatch.StartNew();
            var fragCheck = PoolChecker.Check(fragFs.Pool);
            double fragCheckSeconds = sw.Elapsed.TotalSeconds;
            var fragInfo = fragFs.Pool.Info();

            // --- 4. sequential throughput; 5. CoW random writes; 6. reads after overwrites -----
            seqFs = FileSystem.Create(seqPool);
            seqFs.CreateVolume("v");
            var seq = Sequential(ctx, cfg, seqFs, seqPool);
            var cow = CowAndFragmentation(ctx, cfg, seqFs, seqPool, seq.LastFile, hosts);
            ctx.Progress("files: check of the sequential pool");
            sw.Restart();
            var seqCheck = PoolChecker.Check(seqFs.Pool);
            double seqCheckSeconds = sw.Elapsed.TotalSeconds;
            var seqInfo = seqFs.Pool.Info();

            // --- report -----------------------------------------------------------------------
            string fragCheckText = CheckText(fragCheck, fragCheckSeconds);
            string seqCheckText = CheckText(seqCheck, seqCheckSeconds);
            sb.AppendLine("### Files layer vs XFS and btrfs");
            sb.AppendLine();
            sb.AppendLine("Every baseline below is measured in this run, on this machine, on the same disk as the Cowfish pools:");
            foreach (var h in hosts) sb.AppendLine($"- {h.Name}: {h.Fs.Describe()};");
            sb.AppendLine("- fio: a plain file in the pool directory (the host file system of the pool).");
            sb.AppendLine();
            sb.AppendLine($"Cowfish pools: `files-frag.pool` (fragmented files, clones, snapshots, latency; {Fmt.MB(fragInfo.SizeBytes)}, " +
                          $"{Fmt.Count((long)fragInfo.UsedBlocks)} blocks used) and `files-seq.pool` (sequential, CoW, fragmentation; {Fmt.MB(seqInfo.SizeBytes)}). " +
                          $"Check: fragmented pool {fragCheckText}; sequential pool {seqCheckText}.");
            sb.AppendLine();
            sb.Append(build);
            sb.AppendLine();
            sb.Append(FormatClones(ctx, cfg, cfClone, hosts, fragCheckText));
            sb.AppendLine();
            sb.Append(FormatSnapshots(ctx, cfSnap, btSnap, btSnapCmd, fragCheckText));
            sb.AppendLine();
            sb.Append(FormatLatency(ctx, cfg, latencies, fragCheckText));
            sb.AppendLine();
            sb.Append(seq.Format(ctx, seqCheckText));
            sb.AppendLine();
            sb.Append(cow.Format(ctx, seqCheckText));
            foreach (var (name, rep) in new[] { ("fragmented", fragCheck), ("sequential", seqCheck) })
                if (!rep.IsClean)
                    sb.AppendLine().AppendLine($"**check faults in the {name} pool ({rep.Faults.Count}):** {string.Join("; ", rep.Faults.Take(5))}");
            return sb.ToString();
        }
        finally
        {
            fragFs?.Dispose();
            seqFs?.Dispose();
            File.Delete(fragPool);
            File.Delete(seqPool);
            foreach (var h in hosts) h.Fs.Dispose();
            ctx.Progress($"files: done in {Fmt.Time(total.Elapsed.TotalSeconds)}, loop devices detached");
        }
    }

    /// <summary>A ratio that may be tiny, written as a fraction when it is under 0.01.</summary>
    private static string SmallRatio(double r) => r is > 0 and < 0.01 ? $"1/{Fmt.Count((long)Math.Round(1 / r))}" : Fmt.Ratio(r);

    /// <summary>The engine's range-clone slice bounds, as read from the file system.</summary>
    private static string _sliceBounds = "";

    private static string CheckText(CheckReport r, double seconds) =>
        (r.IsClean ? "clean" : $"**{r.Faults.Count} FAULTS**") + $" ({Fmt.Count(r.Nodes)} nodes, {Fmt.Time(seconds)})";

    private static byte[] RandomBlock(int seed, int size = Block)
    {
        var b = new byte[size];
        new Random(seed).NextBytes(b);
        return b;
    }

    // =====================================================================================
    // 1. Fragmented files and whole-file clones
    // =====================================================================================

    private static string FragName(long n) => $"frag-{n}";

    /// <summary>
    /// Every size gets a file of n extents on each system, made the same way: 4 KiB written at every
    /// other block (blocks 0, 2, 4, ...), so that each written block is an extent of its own, then
    /// one sync. The kernel files are built on a second thread while Cowfish builds its own.
    /// </summary>
    private static string BuildFragmented(BenchContext ctx, Config cfg, FileSystem fs, List<Host> hosts)
    {
        Exception? hostError = null;
        var hostThread = new Thread(() =>
        {
            try
            {
                foreach (long n in cfg.Sizes)
                    foreach (var h in hosts)
                    {
                        var path = h.PathOf(FragName(n));
                        var buf = RandomBlock(11);
                        var sw = Stopwatch.StartNew();
                        using (var fh = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
                        {
                            RandomAccess.SetLength(fh, (2 * n - 1) * Block);
                            for (long i = 0; i < n; i++)
                            {
                                BitConverter.TryWriteBytes(buf, i);
                                RandomAccess.Write(fh, buf, 2 * i * Block);
                            }
                            Native.Fsync(fh);
                        }
                        h.BuildSeconds[n] = sw.Elapsed.TotalSeconds;
                        h.Extents[n] = Native.ExtentCount(path);
                        ctx.Progress($"files: {h.Name} {FragName(n)} built in {Fmt.Time(h.BuildSeconds[n])}, FIEMAP extents {Fmt.Count(h.Extents[n])}");
                    }
            }
            catch (Exception e) { hostError = e; }
        }) { Name = "host-build" };
        hostThread.Start();

        var cfBuild = new Dictionary<long, double>();
        var cfRanges = new Dictionary<long, long>();
        var data = RandomBlock(11);
        foreach (long n in cfg.Sizes)
        {
            string path = $"v/{FragName(n)}";
            fs.CreateFile(path);
            var sw = Stopwatch.StartNew();
            fs.Truncate(path, (2 * n - 1) * Block);
            for (long i = 0; i < n; i++)
            {
                BitConverter.TryWriteBytes(data, i);
                fs.Write(path, 2 * i * Block, data);
                if (i % 4096 == 4095) fs.Flush(); // bounded garbage: freed blocks come back only after a durable commit
            }
            fs.Flush();
            cfBuild[n] = sw.Elapsed.TotalSeconds;
            cfRanges[n] = fs.DataRanges(path).Count;
            ctx.Progress($"files: Cowfish {FragName(n)} built in {Fmt.Time(cfBuild[n])}, data ranges {Fmt.Count(cfRanges[n])}");
        }
        hostThread.Join();
        if (hostError is not null) throw new InvalidOperationException("building the fragmented files on XFS/btrfs failed", hostError);

        var t = new Table(["extents", "file size", "Cowfish: build (4 KiB writes/s)", "Cowfish: data ranges", .. hosts.SelectMany(h => new[] { $"{h.Name}: build (writes/s)", $"{h.Name}: FIEMAP extents" })]);
        foreach (long n in cfg.Sizes)
        {
            var row = new List<string> { Fmt.Pow10(n), Fmt.MB((2 * n - 1) * (double)Block), $"{Fmt.Time(cfBuild[n])} ({Fmt.Rate(n / cfBuild[n])})", Fmt.Count(cfRanges[n]) };
            foreach (var h in hosts) { row.Add($"{Fmt.Time(h.BuildSeconds[n])} ({Fmt.Rate(n / h.BuildSeconds[n])})"); row.Add(Fmt.Count(h.Extents[n])); }
            t.Add([.. row]);
        }
        var sb = new StringBuilder();
        sb.AppendLine("#### Setup: fragmented files");
        sb.AppendLine();
        sb.AppendLine("Each file is first sized to 2n − 1 blocks (ftruncate / `Truncate`: without it XFS's speculative preallocation turns the gaps into unwritten extents, " +
                      "2n − 1 extents in all), then gets one 4 KiB block written at every other block offset (0, 2, 4, …), so each written block is an extent of its own and the gaps are holes; " +
                      "the same recipe on every system. Cowfish: `FileSystem.Write(..., durable: false)` per block, `Flush()` every 4,096 writes and at the end " +
                      "(without the periodic flush, blocks freed by copy-on-write are not reusable and the pool grows about 8× the data). " +
                      "XFS / btrfs: buffered `pwrite` per block, then `fsync`, on a second thread while Cowfish builds (so the build rates are setup figures only, not a comparison; " +
                      "random 4 KiB writes are compared properly below). Extents are verified: Cowfish data ranges (separate ranges = separate extents), FIEMAP on the kernel file systems.");
        sb.AppendLine();
        sb.Append(t);
        return sb.ToString();
    }

    /// <summary>
    /// Clone timings, one system at a time (so that one system's background work — writeback, XFS
    /// inode GC, the btrfs cleaner — does not land on another's measurements), sizes round-robin
    /// within each system. A raw pwrite + fdatasync control is measured right after Cowfish's clones.
    /// </summary>
    private static (Dictionary<long, List<double>> Cowfish, List<double> RawSync) CloneTimes(BenchContext ctx, Config cfg, FileSystem fs, List<Host> hosts)
    {
        Settle(hosts);
        var cf = cfg.Sizes.ToDictionary(n => n, _ => new List<double>());
        ctx.Progress($"files: Cowfish whole-file clones, {cfg.CowfishCloneReps} rounds over {cfg.Sizes.Length} sizes");
        for (int r = -1; r < cfg.CowfishCloneReps; r++) // round -1 warms up
        {
            for (int j = 0; j < cfg.Sizes.Length; j++)
            {
                long n = cfg.Sizes[(j + Math.Max(r, 0)) % cfg.Sizes.Length];
                string dst = $"v/clone-{n}";
                long t0 = Stopwatch.GetTimestamp();
                fs.Clone($"v/{FragName(n)}", dst);
                double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                if (r >= 0) cf[n].Add(s);
                fs.Remove(dst);
                fs.Reclaim();
            }
        }
        var raw = RawDisk.WriteSyncLatencies(ctx.TempPath("raw-files-sync.dat"), 50);

        // Range clone of the whole file into a new, empty file: O(extents), in slices.
        _sliceBounds = $"≤ {Fmt.Count(fs.CloneSliceRecords)} records or ≤ {Fmt.Time(fs.CloneSliceTime.TotalSeconds)} of gathering";
        foreach (long n in cfg.Sizes)
        {
            int reps = cfg.RangeCloneReps(n);
            ctx.Progress($"files: Cowfish CloneRange of {Fmt.Count(n)} extents × {reps}");
            var list = new List<double>();
            for (int r = 0; r < reps; r++)
            {
                string dst = $"v/range-{n}";
                fs.CreateFile(dst);
                long t0 = Stopwatch.GetTimestamp();
                fs.CloneRange($"v/{FragName(n)}", 0, 0, dst, 0);
                list.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                fs.Remove(dst);
                fs.Reclaim();
            }
            RangeClone[n] = list;
        }

        foreach (var h in hosts)
        {
            foreach (long n in cfg.Sizes) { h.Clone[n] = new(); h.CloneSync[n] = new(); }
            // Sizes in ascending order, not round-robin: deleting a big clone leaves the kernel
            // background work (XFS inode GC, the btrfs cleaner) that would land on the next sizes.
            foreach (long n in cfg.Sizes)
            {
                ctx.Progress($"files: {h.Name} FICLONE of {Fmt.Count(n)} extents × {cfg.HostCloneReps(n)}");
                for (int r = 0; r < cfg.HostCloneReps(n); r++)
                {
                    var (clone, sync) = HostClone(h, h.PathOf(FragName(n)), h.PathOf($"clone-{n}"));
                    h.Clone[n].Add(clone);
                    h.CloneSync[n].Add(sync);
                }
                Settle(hosts);
            }
            // One `cp --reflink=always` per size, to show that it is the ioctl plus a process start.
            foreach (long n in cfg.Sizes.Where(n => n <= 100_000))
            {
                string dst = h.PathOf($"cp-{n}");
                h.Cp[n] = Shell.Timed("cp", "--reflink=always", h.PathOf(FragName(n)), dst);
                File.Delete(dst);
                Native.SyncFs(h.Fs.Mount);
            }
            Settle(hosts);
        }
        return (cf, raw);
    }

    /// <summary>Cowfish range-clone times per extent count (seconds), filled by <see cref="CloneTimes"/>.</summary>
    private static readonly Dictionary<long, List<double>> RangeClone = new();

    /// <summary>Syncs the kernel file systems and gives their background work a moment.</summary>
    private static void Settle(List<Host> hosts)
    {
        foreach (var h in hosts) Native.SyncFs(h.Fs.Mount);
        Thread.Sleep(2000);
    }

    /// <summary>FICLONE into a new file, then syncfs; returns (ioctl, ioctl + syncfs) in seconds. The clone is deleted afterwards.</summary>
    private static (double Clone, double WithSync) HostClone(Host h, string src, string dst)
    {
        double clone, total;
        using (var s = File.OpenHandle(src, FileMode.Open, FileAccess.Read))
        using (var d = File.OpenHandle(dst, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            long t0 = Stopwatch.GetTimestamp();
            Native.Ficlone(d, s);
            clone = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            Native.SyncFs(d);
            total = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        File.Delete(dst);
        Native.SyncFs(h.Fs.Mount);
        return (clone, total);
    }

    private static string FormatClones(BenchContext ctx, Config cfg, (Dictionary<long, List<double>> Cowfish, List<double> RawSync) m, List<Host> hosts, string check)
    {
        var cf = m.Cowfish;
        var sb = new StringBuilder();
        long n0 = cfg.Sizes[0];
        sb.AppendLine("#### 1. Whole-file clone vs extent count");
        sb.AppendLine();
        sb.AppendLine($"Cowfish: `FileSystem.Clone(src, dst)` into a new file, which commits durably (two fdatasyncs) before it returns; median of {cfg.CowfishCloneReps}. " +
                      "XFS / btrfs: `ioctl(FICLONE)` into a new file (the call `cp --reflink=always` makes), then `syncfs` so the clone is as durable as Cowfish's; " +
                      $"median of {string.Join(" / ", cfg.Sizes.Select(n => cfg.HostCloneReps(n)))} runs at {string.Join(" / ", cfg.Sizes.Select(Fmt.Pow10))} extents " +
                      "(\"best\" = the fastest run: on XFS the first clone after a quiet spell is often about 2× faster than the next ones). " +
                      "Every clone is deleted (and, on Cowfish, reclaimed) before the next. One system at a time (so that one's background work does not land on another); Cowfish's sizes go round-robin, the kernels' in ascending order " +
                      "with a `syncfs` and a 2 s pause between sizes (deleting a big clone leaves them background work). " +
                      $"Control, right after Cowfish's clones: raw 4 KiB pwrite + fdatasync in the pool directory, median {Fmt.Time(Stats.Median(m.RawSync))} (p90 {Fmt.Time(Stats.Percentile(m.RawSync, 90))}); " +
                      "a durable Cowfish commit needs two flushes. " +
                      $"Ratios are Cowfish ÷ baseline (below 1 = Cowfish faster); flatness = time at N ÷ time at {Fmt.Pow10(n0)} on the same system (1 = flat). " +
                      $"`cp` = one run of `cp --reflink=always` as a process (≤ 10^5 extents). Check of the pool afterwards: {check}.");
        sb.AppendLine();
        var headers = new List<string> { "extents", "Cowfish Clone (durable)", "(max)", "flatness" };
        foreach (var h in hosts)
            headers.AddRange([$"{h.Name} FICLONE", "(best)", $"{h.Name} FICLONE + syncfs", $"{h.Name} `cp`", "flatness (FICLONE)"]);
        foreach (var h in hosts) headers.AddRange([$"Cowfish / {h.Name} (durable)", $"Cowfish / {h.Name} FICLONE alone"]);
        var t = new Table([.. headers]);
        double cf0 = Stats.Median(cf[n0]);
        foreach (long n in cfg.Sizes)
        {
            double c = Stats.Median(cf[n]);
            var row = new List<string> { Fmt.Pow10(n), Fmt.Time(c), Fmt.Time(Stats.Max(cf[n])), Fmt.Ratio(c / cf0) };
            foreach (var h in hosts)
                row.AddRange([Fmt.Time(Stats.Median(h.Clone[n])), Fmt.Time(h.Clone[n].Min()), Fmt.Time(Stats.Median(h.CloneSync[n])),
                    h.Cp.TryGetValue(n, out double cp) ? Fmt.Time(cp) : "—", Fmt.Ratio(Stats.Median(h.Clone[n]) / Stats.Median(h.Clone[n0]))]);
            foreach (var h in hosts)
                row.AddRange([SmallRatio(c / Stats.Median(h.CloneSync[n])), SmallRatio(c / Stats.Median(h.Clone[n]))]);
            t.Add([.. row]);
        }
        sb.Append(t);

        // Range clone vs FICLONE, extents per second.
        sb.AppendLine();
        sb.AppendLine("Range clone: `FileSystem.CloneRange(src, 0, 0, dst, 0)` of the whole fragmented file into a new empty file (copies every extent record, " +
                      $"in slices of {_sliceBounds}, each its own transaction; the last commit is durable), no other load; " +
                      $"median of {string.Join(" / ", cfg.Sizes.Select(n => cfg.RangeCloneReps(n)))} runs. Baseline: XFS FICLONE of the same file, above (XFS's FICLONERANGE " +
                      "over a whole file is the same remap loop). DESIGN target: ≥ 2× the extents per second of XFS.");
        sb.AppendLine();
        var headers2 = new List<string> { "extents", "Cowfish CloneRange", "extents/s" };
        foreach (var h in hosts) headers2.AddRange([$"{h.Name} FICLONE extents/s", $"Cowfish ÷ {h.Name} (extents/s)"]);
        var t3 = new Table([.. headers2]);
        foreach (long n in cfg.Sizes)
        {
            double rc = Stats.Median(RangeClone[n]);
            var row = new List<string> { Fmt.Pow10(n), Fmt.Time(rc), Fmt.Rate(n / rc) };
            foreach (var h in hosts)
            {
                double hc = Stats.Median(h.Clone[n]);
                row.AddRange([Fmt.Rate(n / hc), Fmt.Ratio(hc / rc)]);
            }
            t3.Add([.. row]);
        }
        sb.Append(t3);

        long nMax = cfg.Sizes[^1];
        double cmax = Stats.Median(cf[nMax]);
        double rcMax = Stats.Median(RangeClone[nMax]);
        foreach (var h in hosts.Where(h => h.Fs.Kind == "xfs"))
            ctx.Key("files", $"CloneRange of {Fmt.Pow10(nMax)} extents vs XFS FICLONE, extents/s", Fmt.Rate(nMax / rcMax, " extents/s"),
                Fmt.Ratio(Stats.Median(h.Clone[nMax]) / rcMax), "≥ 2×");
        ctx.Key("files", $"whole-file Clone (durable) at {Fmt.Pow10(nMax)} extents", Fmt.Time(cmax), "—", "≤ 1 ms at 1 M extents");
        ctx.Key("files", $"whole-file Clone flatness, {Fmt.Pow10(nMax)} vs {Fmt.Pow10(n0)} extents", Fmt.Time(cmax), Fmt.Ratio(cmax / cf0), "1× (flat)");
        foreach (var h in hosts)
        {
            ctx.Key("files", $"Clone at {Fmt.Pow10(nMax)} extents vs {h.Name} FICLONE + syncfs", Fmt.Time(Stats.Median(h.CloneSync[nMax])),
                SmallRatio(cmax / Stats.Median(h.CloneSync[nMax])), "≪ 1 (kernel time grows with extents)");
            ctx.Key("files", $"{h.Name} FICLONE flatness, {Fmt.Pow10(nMax)} vs {Fmt.Pow10(n0)} extents", Fmt.Time(Stats.Median(h.Clone[nMax])),
                Fmt.Ratio(Stats.Median(h.Clone[nMax]) / Stats.Median(h.Clone[n0])), "—");
        }
        return sb.ToString();
    }

    // =====================================================================================
    // 2. Snapshots
    // =====================================================================================

    private static (List<double> Cowfish, List<double> Btrfs, double BtrfsCommand) Snapshots(BenchContext ctx, Config cfg, FileSystem fs, Host bt)
    {
        ctx.Progress($"files: {cfg.SnapshotReps} snapshots each, Cowfish volume and btrfs subvolume");
        var cf = new List<double>();
        var btr = new List<double>();
        for (int r = -1; r < cfg.SnapshotReps; r++)
        {
            fs.Flush();
            long t0 = Stopwatch.GetTimestamp();
            fs.Snapshot("v", $"snap{r + 1}", readOnly: true);
            double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            if (r >= 0) cf.Add(s);
            fs.DeleteVolume($"snap{r + 1}");
            fs.Reclaim();

            Native.SyncFs(bt.Fs.Mount);
            t0 = Stopwatch.GetTimestamp();
            Native.BtrfsSnapshot(bt.Fs.DataDir, bt.Fs.Mount, $"snap{r + 1}", readOnly: true);
            s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            if (r >= 0) btr.Add(s);
            Shell.Run("btrfs", "-q", "subvolume", "delete", Path.Combine(bt.Fs.Mount, $"snap{r + 1}"));
        }
        Native.SyncFs(bt.Fs.Mount);
        string cmdSnap = Path.Combine(bt.Fs.Mount, "snap-cmd");
        double cmd = Shell.Timed("btrfs", "-q", "subvolume", "snapshot", "-r", bt.Fs.DataDir, cmdSnap);
        Shell.Run("btrfs", "-q", "subvolume", "delete", cmdSnap);
        return (cf, btr, cmd);
    }

    private static string FormatSnapshots(BenchContext ctx, List<double> cf, List<double> bt, double btCmd, string check)
    {
        var sb = new StringBuilder();
        sb.AppendLine("#### 2. Snapshot of the volume that holds the fragmented files");
        sb.AppendLine();
        sb.AppendLine($"Cowfish: `FileSystem.Snapshot(\"v\", name, readOnly: true)` of the volume holding all the fragmented files above (durable when it returns). " +
                      "btrfs: `BTRFS_IOC_SNAP_CREATE_V2` (read-only) of the subvolume holding the same files, which commits a transaction; `syncfs` first so " +
                      $"it starts from a clean state. Median of {cf.Count}; each snapshot is deleted (and, on Cowfish, reclaimed) before the next. " +
                      $"One `btrfs subvolume snapshot -r` as a process took {Fmt.Time(btCmd)} (process start included). Check of the pool afterwards: {check}.");
        sb.AppendLine();
        var t = new Table("system", "median", "p90", "max", "ratio Cowfish / btrfs");
        t.Add("Cowfish Snapshot", Fmt.Time(Stats.Median(cf)), Fmt.Time(Stats.Percentile(cf, 90)), Fmt.Time(Stats.Max(cf)), Fmt.Ratio(Stats.Median(cf) / Stats.Median(bt)));
        t.Add("btrfs snapshot ioctl (**baseline**)", Fmt.Time(Stats.Median(bt)), Fmt.Time(Stats.Percentile(bt, 90)), Fmt.Time(Stats.Max(bt)), "1.00×");
        sb.Append(t);
        ctx.Key("files", "Snapshot of the volume vs btrfs subvolume snapshot", Fmt.Time(Stats.Median(cf)), Fmt.Ratio(Stats.Median(cf) / Stats.Median(bt)), "O(1); ≤ btrfs");
        return sb.ToString();
    }

    // =====================================================================================
    // 3. Latency during a clone
    // =====================================================================================

    private interface ITarget
    {
        void Read(long offset, Span<byte> buffer);
        void Write(long offset, ReadOnlySpan<byte> data);
    }

    private sealed class CowfishTarget(FileSystem fs, string path) : ITarget
    {
        public void Read(long offset, Span<byte> buffer) => fs.Read(path, offset, buffer);
        public void Write(long offset, ReadOnlySpan<byte> data) => fs.Write(path, offset, data, durable: false);
    }

    /// <summary>pread / pwrite on a file; with O_DIRECT, through a 4 KiB-aligned bounce buffer per thread.</summary>
    private sealed unsafe class PosixTarget(Microsoft.Win32.SafeHandles.SafeFileHandle h, bool direct) : ITarget
    {
        [ThreadStatic] private static byte* t_aligned;

        private static Span<byte> Aligned(int length)
        {
            if (t_aligned == null) t_aligned = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(Block, Block); // one per load thread, kept for the run
            return new Span<byte>(t_aligned, length);
        }

        public void Read(long offset, Span<byte> buffer)
        {
            if (!direct) { RandomAccess.Read(h, buffer, offset); return; }
            var a = Aligned(buffer.Length);
            RandomAccess.Read(h, a, offset);
            a.CopyTo(buffer);
        }

        public void Write(long offset, ReadOnlySpan<byte> data)
        {
            if (!direct) { RandomAccess.Write(h, data, offset); return; }
            var a = Aligned(data.Length);
            data.CopyTo(a);
            RandomAccess.Write(h, a, offset);
        }
    }

    /// <summary>
    /// One reader and one writer thread, each doing 4 KiB ops at random block offsets of the file,
    /// paced to a fixed rate (no bursts after a stall). Every op's start and end are kept.
    /// </summary>
    private sealed class Load
    {
        private readonly ITarget _target;
        private readonly long _blocks;
        private readonly double _readRate, _writeRate;
        private readonly List<(long Start, long End, bool Gc)> _reads = new(), _writes = new();
        private volatile bool _stop;
        private Thread[] _threads = [];
        private Exception? _error;

        public Load(ITarget target, long fileBytes, double readRate, double writeRate)
        {
            _target = target;
            _blocks = fileBytes / Block;
            _readRate = readRate;
            _writeRate = writeRate;
        }

        public void Start()
        {
            _threads = [new Thread(() => Loop(false, _readRate, _reads, 1)) { Name = "load-read" }, new Thread(() => Loop(true, _writeRate, _writes, 2)) { Name = "load-write" }];
            foreach (var t in _threads) t.Start();
        }

        public void Stop()
        {
            _stop = true;
            foreach (var t in _threads) t.Join();
            if (_error is not null) throw new InvalidOperationException("the I/O load failed", _error);
        }

        private void Loop(bool write, double rate, List<(long, long, bool)> log, int seed)
        {
            try
            {
                var rnd = new Random(seed);
                var buf = RandomBlock(seed + 100);
                long interval = (long)(Stopwatch.Frequency / rate);
                long next = Stopwatch.GetTimestamp();
                while (!_stop)
                {
                    long now = Stopwatch.GetTimestamp();
                    if (now < next)
                    {
                        double ms = (next - now) * 1000.0 / Stopwatch.Frequency;
                        Thread.Sleep(TimeSpan.FromMilliseconds(Math.Max(ms, 0.05)));
                        continue;
                    }
                    next = Math.Max(next + interval, now); // after a stall: carry on at the rate, do not burst
                    long off = rnd.NextInt64(_blocks) * Block;
                    int gc0 = GC.CollectionCount(0);
                    long t0 = Stopwatch.GetTimestamp();
                    if (write) { BitConverter.TryWriteBytes(buf, t0); _target.Write(off, buf); }
                    else _target.Read(off, buf);
                    long t1 = Stopwatch.GetTimestamp();
                    bool gc = GC.CollectionCount(0) != gc0;
                    lock (log) log.Add((t0, t1, gc));
                }
            }
            catch (Exception e) { _error = e; _stop = true; }
        }

        /// <summary>Latencies of the ops that overlap [from, to] (timestamps).</summary>
        public Samples Window(long from, long to)
        {
            var s = new Samples { Seconds = (to - from) / (double)Stopwatch.Frequency };
            foreach (var (list, dst, noGc) in new[] { (_reads, s.Reads, s.ReadsNoGc), (_writes, s.Writes, s.WritesNoGc) })
                lock (list)
                    foreach (var (a, b, gc) in list)
                        if (a <= to && b >= from)
                        {
                            dst.Add((b - a) / (double)Stopwatch.Frequency);
                            if (!gc) noGc.Add((b - a) / (double)Stopwatch.Frequency);
                        }
            return s;
        }
    }

    /// <summary>Runs the load alone for <paramref name="seconds"/>; all ops count.</summary>
    private static (int Gen2, TimeSpan Pause) GcNow() => (GC.CollectionCount(2), GC.GetTotalPauseDuration());

    private static string GcSince((int Gen2, TimeSpan Pause) g0) =>
        $"{GC.CollectionCount(2) - g0.Gen2} gen2 GCs, {Fmt.Time((GC.GetTotalPauseDuration() - g0.Pause).TotalSeconds)} paused";

    private static Samples Baseline(ITarget t, long fileBytes, Config cfg, double seconds)
    {
        var load = new Load(t, fileBytes, cfg.ReadsPerSecond, cfg.WritesPerSecond);
        var gc = GcNow();
        load.Start();
        Thread.Sleep(TimeSpan.FromSeconds(0.5)); // warm-up, not counted
        long from = Stopwatch.GetTimestamp();
        Thread.Sleep(TimeSpan.FromSeconds(seconds));
        long to = Stopwatch.GetTimestamp();
        load.Stop();
        var r = load.Window(from, to);
        r.Gc = GcSince(gc);
        return r;
    }

    /// <summary>Starts the load, runs <paramref name="clone"/> after a lead-in, and keeps the ops that overlap the clone.</summary>
    private static Samples DuringClone(ITarget t, long fileBytes, Config cfg, Action clone)
    {
        var load = new Load(t, fileBytes, cfg.ReadsPerSecond, cfg.WritesPerSecond);
        var gc = GcNow();
        load.Start();
        long from, to;
        try
        {
            Thread.Sleep(TimeSpan.FromSeconds(0.5));
            from = Stopwatch.GetTimestamp();
            clone();
            to = Stopwatch.GetTimestamp();
            Thread.Sleep(TimeSpan.FromSeconds(0.3)); // let an op that was stalled by the clone finish
        }
        finally { load.Stop(); }
        var r = load.Window(from, to);
        r.Gc = GcSince(gc);
        return r;
    }

    private static List<Latency> LatencyDuringClone(BenchContext ctx, Config cfg, FileSystem fs, List<Host> hosts)
    {
        long n = cfg.Sizes[^1];
        long bytes = (2 * n - 1) * Block;
        var result = new List<Latency>();
        string src = $"v/{FragName(n)}";
        var cft = new CowfishTarget(fs, src);

        Settle(hosts);
        ctx.Progress($"files: latency, Cowfish, repeated whole-file clones of {Fmt.Count(n)} extents");
        var b1 = Baseline(cft, bytes, cfg, cfg.PhaseSeconds);
        var cloneTimes = new List<double>();
        int k = 0;
        var d1 = DuringClone(cft, bytes, cfg, () =>
        {
            var end = Stopwatch.GetTimestamp() + (long)(cfg.PhaseSeconds * Stopwatch.Frequency);
            while (Stopwatch.GetTimestamp() < end)
            {
                long t0 = Stopwatch.GetTimestamp();
                fs.Clone(src, $"v/lat-clone-{k++}");
                cloneTimes.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                Thread.Sleep(50);
            }
        });
        result.Add(new Latency
        {
            System = "Cowfish", Scenario = $"`Clone` (whole file), repeated every 50 ms for {cfg.PhaseSeconds:0} s", Window = d1.Seconds, Base = b1, During = d1,
            Note = $"{cloneTimes.Count} clones, median {Fmt.Time(Stats.Median(cloneTimes))}, max {Fmt.Time(Stats.Max(cloneTimes))}",
        });
        for (int i = 0; i < k; i++) fs.Remove($"v/lat-clone-{i}");
        fs.Reclaim();

        ctx.Progress($"files: latency, Cowfish, CloneRange of {Fmt.Count(n)} extents");
        var b2 = Baseline(cft, bytes, cfg, cfg.PhaseSeconds);
        fs.CreateFile("v/lat-range");
        ulong g0 = 0, g1 = 0;
        var d2 = DuringClone(cft, bytes, cfg, () =>
        {
            g0 = fs.Pool.CommittedGeneration.Value;
            fs.CloneRange(src, 0, 0, "v/lat-range", 0);
            g1 = fs.Pool.CommittedGeneration.Value;
        });
        // Every commit is one generation: the clone's slices, plus its freeze and release, plus the load's writes.
        long slices = Math.Max(1, (long)(g1 - g0) - d2.Writes.Count - 2);
        result.Add(new Latency
        {
            System = "Cowfish", Scenario = $"`CloneRange` of the whole file into a new file (slices of ≤ {Fmt.Count(fs.CloneSliceRecords)} records or ≤ {Fmt.Time(fs.CloneSliceTime.TotalSeconds)} of gathering)",
            Window = d2.Seconds, Base = b2, During = d2,
            Note = $"≈ {Fmt.Count(slices)} slices (commits less the load's writes), ≈ {Fmt.Time(d2.Seconds / slices)} per slice; {Fmt.Rate(n / d2.Seconds, " extents/s")}",
        });
        fs.Remove("v/lat-range");
        fs.Reclaim();

        foreach (var h in hosts)
            foreach (bool direct in new[] { false, true })
            {
                Settle(hosts);
                string mode = direct ? "O_DIRECT" : "buffered";
                ctx.Progress($"files: latency, {h.Name} ({mode} load), cp --reflink=always of {Fmt.Count(n)} extents");
                string hsrc = h.PathOf(FragName(n)), dst = h.PathOf("lat-clone");
                using var fh = direct ? Native.OpenDirect(hsrc) : File.OpenHandle(hsrc, FileMode.Open, FileAccess.ReadWrite);
                var pt = new PosixTarget(fh, direct);
                var hb = Baseline(pt, bytes, cfg, cfg.PhaseSeconds);
                var hd = DuringClone(pt, bytes, cfg, () => Shell.Run("cp", "--reflink=always", hsrc, dst));
                result.Add(new Latency
                {
                    System = h.Name, Scenario = $"`cp --reflink=always` of the file; {mode} load", Window = hd.Seconds, Base = hb, During = hd,
                    Note = $"{Fmt.Rate(n / hd.Seconds, " extents/s")}",
                });
                File.Delete(dst);
            }
        Settle(hosts);
        return result;
    }

    private static string FormatLatency(BenchContext ctx, Config cfg, List<Latency> rows, string check)
    {
        var sb = new StringBuilder();
        long n = cfg.Sizes[^1];
        sb.AppendLine($"#### 3. Read and write latency on the source while it is cloned ({Fmt.Pow10(n)} extents)");
        sb.AppendLine();
        sb.AppendLine($"Load: one thread doing 4 KiB reads at random block offsets of the source file, paced at {cfg.ReadsPerSecond:0}/s, and one doing 4 KiB writes, paced at {cfg.WritesPerSecond:0}/s " +
                      "(a stalled op is not followed by a burst). Same program for every system: through the library for Cowfish (`Read`, `Write(durable: false)`), " +
                      "`pread` / `pwrite` on the file for XFS and btrfs, buffered (as Cowfish's pool file is) and, in a second run, with O_DIRECT " +
                      "(the DESIGN's reference figures for XFS reads use O_DIRECT). " +
                      $"Baseline: the same load for {cfg.PhaseSeconds:0} s just before, with no clone. \"During\" keeps every op that overlaps the clone's run " +
                      "(an op stalled for the whole clone counts once, with its full latency). Latencies are service times (start to end of the call). " +
                      "The load runs in this .NET process, so a garbage collection pauses it whatever the system under test; the second-to-last column leaves out ops " +
                      "during which a GC ran, to separate the engine's waits from GC pauses (Cowfish allocates much more than the kernel rows' harness). " +
                      $"DESIGN target (there over NBD; here through the library): worst ≤ 10 ms, and p99 ≤ 2× the p99 without a clone. Check of the pool afterwards: {check}.");
        sb.AppendLine();
        var t = new Table("system", "clone", "clone took", "reads during (n)", "read p99: base → during", "read p99 ratio", "read worst: base → during",
            "writes during (n)", "write p99: base → during", "write p99 ratio", "write worst: base → during", "target met?",
            "worst read / write during, ops without a GC of this process inside", "note");
        foreach (var r in rows)
        {
            double rp = Stats.Percentile(r.During.Reads, 99), rb = Stats.Percentile(r.Base.Reads, 99);
            double wp = Stats.Percentile(r.During.Writes, 99), wb = Stats.Percentile(r.Base.Writes, 99);
            double rmax = Stats.Max(r.During.Reads), wmax = Stats.Max(r.During.Writes);
            bool ok = Math.Max(rmax, wmax) <= 0.010 && rp <= 2 * rb && wp <= 2 * wb;
            t.Add(r.System, r.Scenario, Fmt.Time(r.Window), Fmt.Count(r.During.Reads.Count), $"{Fmt.Time(rb)} → {Fmt.Time(rp)}", Fmt.Ratio(rp / rb),
                $"{Fmt.Time(Stats.Max(r.Base.Reads))} → **{Fmt.Time(rmax)}**", Fmt.Count(r.During.Writes.Count), $"{Fmt.Time(wb)} → {Fmt.Time(wp)}", Fmt.Ratio(wp / wb),
                $"{Fmt.Time(Stats.Max(r.Base.Writes))} → **{Fmt.Time(wmax)}**", ok ? "yes" : "no",
                $"{Fmt.Time(Stats.Max(r.During.ReadsNoGc))} / {Fmt.Time(Stats.Max(r.During.WritesNoGc))}",
                r.System == "Cowfish" ? $"{r.Note}; GC: base {r.Base.Gc}, during {r.During.Gc}" : r.Note);
            ctx.Key("files", $"{r.System}: worst read / write during {(r.Scenario.StartsWith("`CloneRange", StringComparison.Ordinal) ? "CloneRange" : r.Scenario.StartsWith("`Clone`", StringComparison.Ordinal) ? "repeated Clone" : r.Scenario.EndsWith("O_DIRECT load", StringComparison.Ordinal) ? "cp --reflink (O_DIRECT load)" : "cp --reflink (buffered load)")} of {Fmt.Pow10(n)} extents",
                $"{Fmt.Time(rmax)} / {Fmt.Time(wmax)}", $"p99 {Fmt.Ratio(rp / rb)} / {Fmt.Ratio(wp / wb)} of no-clone p99", "≤ 10 ms; p99 ≤ 2×");
        }
        sb.Append(t);
        return sb.ToString();
    }

    // =====================================================================================
    // 4. Sequential throughput
    // =====================================================================================

    private sealed class SeqResult
    {
        public required long Bytes { get; init; }
        public required string LastFile { get; set; }
        public Throughput CfWrite { get; } = new();
        public Throughput CfWarm { get; } = new();
        public Throughput CfCold { get; } = new();
        public Throughput FioWrite { get; } = new();
        public Throughput FioDirectWrite { get; } = new();
        public Throughput FioWarm { get; } = new();
        public Throughput FioCold { get; } = new();
        public string FioWriteCmd = "", FioDirectCmd = "", FioWarmCmd = "", FioColdCmd = "";

        public string Format(BenchContext ctx, string check)
        {
            var sb = new StringBuilder();
            sb.AppendLine($"#### 4. Sequential write and read of a {Fmt.MB(Bytes)} file, 1 MiB at a time");
            sb.AppendLine();
            sb.AppendLine($"Cowfish: a new file, `Write` of 1 MiB × {Bytes / MiB} (`durable: false`) then `Flush()`, timed together; then `Read` of 1 MiB × {Bytes / MiB}, " +
                          "once with the pool file still in the page cache (warm) and once after evicting it with `posix_fadvise(DONTNEED)` (cold; Cowfish's own node cache stays). " +
                          "Baseline: fio on a plain file in the pool directory, one job, psync, buffered — the I/O path the engine itself uses (pwrite, then fdatasync at the end): " +
                          $"`{FioWriteCmd}`; reads `{FioWarmCmd}` (warm) and `{FioColdCmd}` (cold: fio evicts the file first). " +
                          $"For reference only: `{FioDirectCmd}` (O_DIRECT). Writes and warm reads: median of {CfWrite.Values.Count} rounds; cold reads: median of {CfCold.Values.Count} rounds " +
                          "(the virtual disk has a cache of its own, so cold reads vary a lot); Cowfish and fio alternate. " +
                          $"DESIGN target: ≥ 70 % of fio. Check of the pool afterwards: {check}.");
            sb.AppendLine();
            var t = new Table("workload", "Cowfish", "fio (baseline)", "ratio Cowfish / fio", "target", "all rounds: Cowfish | fio");
            void Row(string name, Throughput c, Throughput f, string target) =>
                t.Add(name, Fmt.MBps(c.Median), Fmt.MBps(f.Median), Fmt.Ratio(c.Median / f.Median), target,
                    $"{string.Join(", ", c.Values.Select(v => Fmt.Num(v / 1e6, "0")))} | {string.Join(", ", f.Values.Select(v => Fmt.Num(v / 1e6, "0")))} MB/s");
            Row("sequential write + final sync", CfWrite, FioWrite, "≥ 0.70×");
            Row("sequential read, warm page cache", CfWarm, FioWarm, "≥ 0.70×");
            Row("sequential read, cold (evicted)", CfCold, FioCold, "≥ 0.70×");
            Row("(write vs fio O_DIRECT write)", CfWrite, FioDirectWrite, "—");
            sb.Append(t);
            ctx.Key("files", "sequential 1 MiB write vs fio (buffered + end fsync)", Fmt.MBps(CfWrite.Median), Fmt.Ratio(CfWrite.Median / FioWrite.Median), "≥ 0.70×");
            ctx.Key("files", "sequential 1 MiB read, warm, vs fio", Fmt.MBps(CfWarm.Median), Fmt.Ratio(CfWarm.Median / FioWarm.Median), "≥ 0.70×");
            ctx.Key("files", "sequential 1 MiB read, cold, vs fio", Fmt.MBps(CfCold.Median), Fmt.Ratio(CfCold.Median / FioCold.Median), "≥ 0.70×");
            return sb.ToString();
        }
    }

    private static double CowfishSeqRead(FileSystem fs, string path, long bytes)
    {
        var buf = new byte[MiB];
        long t0 = Stopwatch.GetTimestamp();
        long got = 0;
        for (long off = 0; off < bytes; off += MiB) got += fs.Read(path, off, buf);
        double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        if (got != bytes) throw new InvalidOperationException($"read {got} of {bytes} bytes of {path}");
        return bytes / s;
    }

    private static SeqResult Sequential(BenchContext ctx, Config cfg, FileSystem fs, string poolPath)
    {
        long bytes = cfg.SeqBytes;
        var res = new SeqResult { Bytes = bytes, LastFile = "" };
        string raw = ctx.TempPath("raw-fio-seq.dat"), rawDirect = ctx.TempPath("raw-fio-seq-direct.dat"), json = ctx.TempPath("fio.json");
        string size = $"--size={bytes / MiB}M";
        string[] common = ["--bs=1M", size, "--ioengine=psync", "--numjobs=1"];
        string[] fioWrite = ["--name=seqwrite", $"--filename={raw}", "--rw=write", .. common, "--end_fsync=1", "--fallocate=none"];
        string[] fioDirect = ["--name=seqwrite-direct", $"--filename={rawDirect}", "--rw=write", .. common, "--direct=1", "--end_fsync=1", "--fallocate=none"];
        string[] fioWarm = ["--name=seqread", $"--filename={raw}", "--rw=read", .. common, "--invalidate=0"];
        string[] fioCold = ["--name=seqread", $"--filename={raw}", "--rw=read", .. common, "--invalidate=1"];
        res.FioWriteCmd = "fio " + string.Join(' ', fioWrite).Replace(raw, "FILE", StringComparison.Ordinal);
        res.FioDirectCmd = "fio " + string.Join(' ', fioDirect).Replace(rawDirect, "FILE", StringComparison.Ordinal);
        res.FioWarmCmd = "fio " + string.Join(' ', fioWarm).Replace(raw, "FILE", StringComparison.Ordinal);
        res.FioColdCmd = "fio " + string.Join(' ', fioCold).Replace(raw, "FILE", StringComparison.Ordinal);
        var buf = RandomBlock(21, MiB);
        for (int r = 0; r < cfg.SeqReps; r++)
        {
            ctx.Progress($"files: sequential round {r + 1}/{cfg.SeqReps}");
            void FioRound()
            {
                File.Delete(raw);
                res.FioWrite.Values.Add(Fio.Run(json, true, fioWrite).BytesPerSecond);
                res.FioWarm.Values.Add(Fio.Run(json, false, fioWarm).BytesPerSecond);
                File.Delete(rawDirect);
                res.FioDirectWrite.Values.Add(Fio.Run(json, true, fioDirect).BytesPerSecond);
                File.Delete(rawDirect);
            }
            void CowfishRound()
            {
                if (res.LastFile != "") { fs.Remove(res.LastFile); fs.Reclaim(); }
                string path = $"v/seq-{r}";
                fs.CreateFile(path);
                fs.Flush();
                long t0 = Stopwatch.GetTimestamp();
                for (long off = 0; off < bytes; off += MiB)
                {
                    BitConverter.TryWriteBytes(buf, off);
                    fs.Write(path, off, buf);
                }
                fs.Flush();
                res.CfWrite.Values.Add(bytes / Stopwatch.GetElapsedTime(t0).TotalSeconds);
                res.LastFile = path;
                res.CfWarm.Values.Add(CowfishSeqRead(fs, path, bytes));
            }
            if (r % 2 == 0) { FioRound(); CowfishRound(); }
            else { CowfishRound(); FioRound(); }
        }
        // Cold reads vary a lot on this machine (the virtual disk has its own cache): more rounds, alternating.
        ctx.Progress($"files: cold sequential reads, {cfg.ColdReps} rounds");
        for (int r = 0; r < cfg.ColdReps; r++)
        {
            void FioCold() => res.FioCold.Values.Add(Fio.Run(json, false, fioCold).BytesPerSecond);
            void CfCold()
            {
                Native.DropCache(poolPath);
                res.CfCold.Values.Add(CowfishSeqRead(fs, res.LastFile, bytes));
            }
            if (r % 2 == 0) { FioCold(); CfCold(); } else { CfCold(); FioCold(); }
        }
        File.Delete(raw);
        return res;
    }

    // =====================================================================================
    // 5. Random 4 KiB writes into a fresh clone; 6. sequential read after them
    // =====================================================================================

    private sealed class CowResult
    {
        public required long Bytes { get; init; }
        public required int Ops { get; init; }
        public double CfIops { get; set; }
        public Dictionary<string, double> HostIops { get; } = new();
        public Dictionary<string, long> HostExtents { get; } = new();
        public Dictionary<string, string> HostCmd { get; } = new();
        public Dictionary<string, Throughput> Reads { get; } = new();
        public string ReadCmd = "";

        public string Format(BenchContext ctx, string check)
        {
            var sb = new StringBuilder();
            sb.AppendLine($"#### 5. Random 4 KiB writes into a freshly cloned {Fmt.MB(Bytes)} file (copy-on-write)");
            sb.AppendLine();
            sb.AppendLine($"The source is a {Fmt.MB(Bytes)} file written sequentially in 1 MiB writes and synced. Cowfish: `Clone`, then {Fmt.Count(Ops)} `FileHandle.Write`s of 4 KiB (write-back) " +
                          "(`durable: false`) at distinct random block offsets (10 % of the blocks), then `Flush()`; IOPS = writes ÷ time including the flush. " +
                          $"XFS / btrfs: `cp --reflink=always` of the source, then fio with the same count of distinct random 4 KiB writes (fio's random map) and a final fsync, " +
                          $"its IOPS = writes ÷ fio's job runtime (which includes the end fsync). Buffered: `{HostCmd.GetValueOrDefault("buffered")}`; O_DIRECT: `{HostCmd.GetValueOrDefault("direct")}`. " +
                          $"One run each. DESIGN target: ≥ XFS on a reflinked file. Check of the pool afterwards: {check}.");
            sb.AppendLine();
            var t = new Table("system", "IOPS", "ratio Cowfish / this", "FIEMAP extents of the copy afterwards");
            t.Add("**Cowfish** `FileHandle.Write` into a `Clone`", Fmt.Rate(CfIops), "1.00×", "—");
            foreach (var (k, v) in HostIops) t.Add(k, Fmt.Rate(v), Fmt.Ratio(CfIops / v), Fmt.Count(HostExtents.GetValueOrDefault(k)));
            sb.Append(t);
            foreach (var (k, v) in HostIops.Where(kv => kv.Key.StartsWith("XFS", StringComparison.Ordinal)))
                ctx.Key("files", $"random 4 KiB CoW writes vs {k}", Fmt.Rate(CfIops, " IOPS"), Fmt.Ratio(CfIops / v), "≥ 1×");

            sb.AppendLine();
            sb.AppendLine($"#### 6. Sequential read after 10 % random overwrites (fragmentation cost)");
            sb.AppendLine();
            sb.AppendLine("Cold sequential read (page cache evicted first) of the fresh source and of the clone after the random writes above, 1 MiB at a time. " +
                          $"Cowfish: `Read` after `posix_fadvise(DONTNEED)` on the pool file; XFS / btrfs: `{ReadCmd}`. " +
                          $"Median of {Reads.Values.First().Values.Count}, alternating. The ratio that matters is fragmented ÷ fresh on the same system (1 = no cost).");
            sb.AppendLine();
            var t2 = new Table("system", "fresh file (baseline)", "after 10 % random overwrites", "fragmented ÷ fresh", "fragmented: Cowfish ÷ this");
            string cfFrag = "Cowfish (clone, overwritten)";
            foreach (var sys in new[] { "Cowfish" }.Concat(HostIops.Keys.Select(k => k.Split(' ')[0]).Distinct()))
            {
                var fresh = Reads[$"{sys} fresh"];
                foreach (var (k, v) in Reads.Where(kv => kv.Key.StartsWith(sys + " ", StringComparison.Ordinal) && !kv.Key.EndsWith(" fresh", StringComparison.Ordinal)))
                    t2.Add(k, Fmt.MBps(fresh.Median), Fmt.MBps(v.Median), Fmt.Ratio(v.Median / fresh.Median), Fmt.Ratio(Reads[cfFrag].Median / v.Median));
            }
            sb.Append(t2);
            var cfFresh = Reads["Cowfish fresh"];
            ctx.Key("files", "cold sequential read after 10 % overwrites vs fresh, Cowfish", Fmt.MBps(Reads[cfFrag].Median), Fmt.Ratio(Reads[cfFrag].Median / cfFresh.Median), "near 1×");
            foreach (var k in Reads.Keys.Where(k => k.StartsWith("XFS", StringComparison.Ordinal) && !k.EndsWith(" fresh", StringComparison.Ordinal)))
                ctx.Key("files", $"cold sequential read after 10 % overwrites vs fresh, {k}", Fmt.MBps(Reads[k].Median), Fmt.Ratio(Reads[k].Median / Reads["XFS fresh"].Median), "—");
            return sb.ToString();
        }
    }

    private static CowResult CowAndFragmentation(BenchContext ctx, Config cfg, FileSystem fs, string poolPath, string freshFile, List<Host> hosts)
    {
        long bytes = cfg.SeqBytes, blocks = bytes / Block;
        int ops = (int)(blocks / 10);
        var res = new CowResult { Bytes = bytes, Ops = ops };
        string json = ctx.TempPath("fio.json");

        // Cowfish: clone the fresh file, then distinct random 4 KiB writes.
        ctx.Progress($"files: Cowfish, {Fmt.Count(ops)} random 4 KiB writes into a fresh clone");
        var order = Enumerable.Range(0, (int)blocks).ToArray();
        new Random(42).Shuffle(order);
        var buf = RandomBlock(31);
        fs.Clone(freshFile, "v/cow");
        // Through a handle, as a disk image is written (the NBD server does the same): the data
        // goes to its new blocks at once, the mappings follow in batches; the final Flush makes
        // every write mapped and durable, as fio's end_fsync does on the kernels.
        var cow = fs.OpenFile("v/cow");
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < ops; i++)
        {
            BitConverter.TryWriteBytes(buf, i);
            cow.Write((long)order[i] * Block, buf);
        }
        fs.Flush();
        res.CfIops = ops / Stopwatch.GetElapsedTime(t0).TotalSeconds;

        // Kernels: a sequentially written source, two reflinked copies, fio randwrite buffered and O_DIRECT.
        string size = $"--size={bytes / MiB}M";
        foreach (var h in hosts)
        {
            ctx.Progress($"files: {h.Name}, fio randwrite into reflinked copies");
            string src = h.PathOf("seq.dat");
            Fio.Run(json, true, "--name=fill", $"--filename={src}", "--rw=write", "--bs=1M", size, "--ioengine=psync", "--end_fsync=1", "--fallocate=none");
            foreach (var mode in new[] { "buffered", "direct" })
            {
                string copy = h.PathOf($"cow-{mode}.dat");
                Shell.Run("cp", "--reflink=always", src, copy);
                Native.SyncFs(h.Fs.Mount);
                string[] args = ["--name=cow", $"--filename={copy}", "--rw=randwrite", "--bs=4k", size, $"--number_ios={ops}", "--ioengine=psync",
                    "--randrepeat=1", "--end_fsync=1", mode == "direct" ? "--direct=1" : "--direct=0"];
                res.HostCmd[mode] = "fio " + string.Join(' ', args).Replace(copy, "COPY", StringComparison.Ordinal);
                var r = Fio.Run(json, true, args);
                if (r.Ios < ops) throw new InvalidOperationException($"fio did {r.Ios} of {ops} writes on {copy}");
                string key = $"{h.Name} reflinked copy, fio {(mode == "direct" ? "O_DIRECT" : "buffered")}";
                res.HostIops[key] = r.Iops;
                res.HostExtents[key] = Native.ExtentCount(copy);
            }
        }

        // Cold sequential reads: fresh vs overwritten.
        res.Reads["Cowfish fresh"] = new();
        res.Reads["Cowfish (clone, overwritten)"] = new();
        foreach (var h in hosts)
        {
            res.Reads[$"{h.Name} fresh"] = new();
            res.Reads[$"{h.Name} (copy, fio buffered writes)"] = new();
            res.Reads[$"{h.Name} (copy, fio O_DIRECT writes)"] = new();
        }
        string[] readArgs = ["--rw=read", "--bs=1M", size, "--ioengine=psync", "--invalidate=1"];
        res.ReadCmd = "fio --name=read --filename=FILE " + string.Join(' ', readArgs);
        for (int r = 0; r < cfg.ColdReps; r++)
        {
            ctx.Progress($"files: cold sequential reads, round {r + 1}/{cfg.ColdReps}");
            foreach (var (key, file) in new[] { ("Cowfish fresh", freshFile), ("Cowfish (clone, overwritten)", "v/cow") }.OrderBy(x => r % 2 == 0 ? x.Item1 : x.Item2))
            {
                Native.DropCache(poolPath);
                res.Reads[key].Values.Add(CowfishSeqRead(fs, file, bytes));
            }
            foreach (var h in hosts)
                foreach (var (key, file) in new[] { ($"{h.Name} fresh", "seq.dat"), ($"{h.Name} (copy, fio buffered writes)", "cow-buffered.dat"), ($"{h.Name} (copy, fio O_DIRECT writes)", "cow-direct.dat") })
                    res.Reads[key].Values.Add(Fio.Run(json, false, ["--name=read", $"--filename={h.PathOf(file)}", .. readArgs]).BytesPerSecond);
        }
        return res;
    }
}
