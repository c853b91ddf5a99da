using System.Diagnostics;
using System.Text;
using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Transactions;

namespace Cowfish.Bench;

/// <summary>
/// Latency of small commits (one Put each), alone and from 8 threads at once (group commit),
/// against the latency of a raw 4 KiB pwrite + fdatasync on the same disk, measured in the same run.
/// The raw and engine measurements are interleaved in chunks, so that a noisy stretch of the
/// shared machine falls on the baseline and on the engine alike.
/// </summary>
internal static class CommitBench
{
    private const int Threads = 8;
    private const int PairBytes = 24 * 1024;

    /// <summary>An open pool with one tree, and what its commits measured so far.</summary>
    private sealed class Subject : IDisposable
    {
        private int _nextKey;

        public Subject(string path, string name, int threads)
        {
            Path = path;
            Name = name;
            Threads = threads;
            Dev = new CountingDevice(FileDevice.Open(path, create: true));
            try { Pool = Pool.Create(Dev, null, ownsDevice: true); }
            catch { Dev.Dispose(); File.Delete(path); throw; }
            using (var tx = Pool.BeginWrite()) { Tree = tx.CreateTree(); tx.Commit(); }
            // Give the tree some depth, and grow the file up front so that no measured commit pays for extending it.
            using (var tx = Pool.BeginWrite())
            {
                for (int i = 0; i < 20_000; i++) tx.Put(Tree, Keys.BigEndian(ulong.MaxValue - (ulong)i), new byte[16]);
                tx.Commit();
            }
        }

        public string Path { get; }
        public string Name { get; }
        public int Threads { get; }
        public CountingDevice Dev { get; }
        public Pool Pool { get; }
        public TreeId Tree { get; }
        public List<double> Latencies { get; } = new();
        public double Wall { get; private set; }
        public long DurableFlushes { get; private set; }
        public long DeviceFlushes { get; private set; }
        public long BytesWritten { get; private set; }
        public CheckReport? Report { get; set; }

        /// <summary>Runs <paramref name="commits"/> one-Put commits spread over the subject's threads.</summary>
        public void Run(int commits, bool record)
        {
            long bytes0 = Dev.BytesWritten, flushes0 = Dev.Flushes, durable0 = Pool.DurableFlushes;
            int per = commits / Threads;
            var lat = new double[Threads][];
            Exception? failure = null;
            int keyBase = _nextKey;
            _nextKey += per;
            using var start = new Barrier(Threads + 1);
            var workers = new Thread[Threads];
            for (int t = 0; t < Threads; t++)
            {
                int tid = t;
                workers[t] = new Thread(() =>
                {
                    var mine = new double[per];
                    var value = new byte[16];
                    start.SignalAndWait();
                    try
                    {
                        for (int i = 0; i < per; i++)
                        {
                            var key = Keys.BigEndian(((ulong)tid << 32) | (uint)(keyBase + i));
                            long t0 = Stopwatch.GetTimestamp();
                            using (var tx = Pool.BeginWrite())
                            {
                                tx.Put(Tree, key, value);
                                tx.Commit();
                            }
                            mine[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                        }
                    }
                    catch (Exception e)
                    {
                        Interlocked.CompareExchange(ref failure, e, null);
                    }
                    lat[tid] = mine;
                }) { IsBackground = true, Name = $"committer {t}" };
                workers[t].Start();
            }
            start.SignalAndWait();
            var sw = Stopwatch.StartNew();
            foreach (var w in workers) w.Join();
            double wall = sw.Elapsed.TotalSeconds;
            if (failure is not null) throw new InvalidOperationException($"a committer thread failed ({Name})", failure);
            if (!record) return;
            Latencies.AddRange(lat.SelectMany(x => x));
            Wall += wall;
            DurableFlushes += Pool.DurableFlushes - durable0;
            DeviceFlushes += Dev.Flushes - flushes0;
            BytesWritten += Dev.BytesWritten - bytes0;
        }

        public int Commits => Latencies.Count;

        public void Dispose()
        {
            Pool.Dispose();
            File.Delete(Path);
        }
    }

    public static string Run(BenchContext ctx)
    {
        int n = ctx.Quick ? 800 : 20_000;
        int rawCount = ctx.Quick ? 400 : 5_000;
        int chunks = ctx.Quick ? 2 : 10;

        var raw = new List<double>();
        var pair = new List<double>();
        var rawChunkMedians = new List<double>();
        using var single = new Subject(ctx.TempPath("commit-1.pool"), "1 thread, sequential commits", 1);
        using var group = new Subject(ctx.TempPath($"commit-{Threads}.pool"), $"{Threads} threads, concurrent commits", Threads);

        ctx.Progress("commit: warming up (JIT)");
        single.Run(80, record: false);
        group.Run(80, record: false);
        RawDisk.WriteSyncLatencies(ctx.TempPath("raw-sync.dat"), 20);

        for (int c = 0; c < chunks; c++)
        {
            ctx.Progress($"commit: chunk {c + 1}/{chunks}: raw × {rawCount / chunks}, commit-shaped pairs × {rawCount / 2 / chunks}, " +
                         $"1 thread × {n / chunks} commits, {Threads} threads × {n / chunks / Threads} commits");
            var r = RawDisk.WriteSyncLatencies(ctx.TempPath("raw-sync.dat"), rawCount / chunks);
            raw.AddRange(r);
            rawChunkMedians.Add(Stats.Median(r));
            pair.AddRange(RawDisk.WriteSyncLatencies(ctx.TempPath("raw-sync.dat"), rawCount / 2 / chunks, PairBytes));
            single.Run(n / chunks, record: true);
            group.Run(n / chunks, record: true);
        }
        single.Report = PoolChecker.Check(single.Pool);
        group.Report = PoolChecker.Check(group.Pool);

        double rawP50 = Stats.Median(raw), rawP99 = Stats.Percentile(raw, 99), pairP50 = Stats.Median(pair);

        var sb = new StringBuilder();
        sb.AppendLine($"### Commit latency (one 8-byte key, 16-byte value per commit)");
        sb.AppendLine();
        sb.AppendLine($"Baseline: one 4 KiB pwrite + fdatasync on a preallocated file in the pool directory. The run is cut into {chunks} chunks; " +
                      "each chunk measures the raw baseline, then the engine, so that both see the same stretches of noise " +
                      $"(raw median per chunk: {string.Join(", ", rawChunkMedians.Select(Fmt.Time))}). " +
                      "A commit needs two flushes (nodes, then superblock), so **2× the raw median is the floor for a lone commit**; " +
                      $"the \"commit-shaped\" row measures that floor directly: pwrite {PairBytes / 1024} KiB + fdatasync, then pwrite 4 KiB + fdatasync. " +
                      "Engine latency is measured from `BeginWrite()` to the return of `Commit()`, so with 8 threads it includes waiting for the writer lock.");
        sb.AppendLine();
        var t = new Table("case", "commits", "commits/s", "median", "p99", "max", "median / raw median", "p99 / raw p99",
            "median / commit-shaped median", "commits per durable flush", "device bytes per commit", "check");
        void RawRow(string name, List<double> x, string bytes) => t.Add(name, Fmt.Count(x.Count), Fmt.Rate(x.Count / x.Sum(), ""),
            Fmt.Time(Stats.Median(x)), Fmt.Time(Stats.Percentile(x, 99)), Fmt.Time(Stats.Max(x)),
            Fmt.Ratio(Stats.Median(x) / rawP50), Fmt.Ratio(Stats.Percentile(x, 99) / rawP99), Fmt.Ratio(Stats.Median(x) / pairP50), "1", bytes, "");
        RawRow("raw: pwrite 4 KiB + fdatasync (**baseline**)", raw, "4,096");
        RawRow("raw: commit-shaped pair", pair, Fmt.Count(PairBytes + 4096));
        foreach (var r in new[] { single, group })
        {
            double p50 = Stats.Median(r.Latencies), p99 = Stats.Percentile(r.Latencies, 99);
            t.Add("**Cowfish: " + r.Name + "**", Fmt.Count(r.Commits), Fmt.Rate(r.Commits / r.Wall, ""), Fmt.Time(p50), Fmt.Time(p99),
                Fmt.Time(Stats.Max(r.Latencies)), Fmt.Ratio(p50 / rawP50), Fmt.Ratio(p99 / rawP99), Fmt.Ratio(p50 / pairP50),
                Fmt.Num((double)r.Commits / r.DurableFlushes, "0.00"), Fmt.Count(r.BytesWritten / r.Commits),
                r.Report?.IsClean == true ? "clean" : "**FAULTS**");
        }
        sb.Append(t);
        sb.AppendLine();
        double single1 = single.Commits / single.Wall, group1 = group.Commits / group.Wall;
        sb.AppendLine($"Group commit throughput gain: {Fmt.Ratio(group1 / single1)} the single-thread commits/s; " +
                      $"device flushes per durable flush: {Fmt.Num((double)single.DeviceFlushes / single.DurableFlushes, "0.00")} (1 thread), " +
                      $"{Fmt.Num((double)group.DeviceFlushes / group.DurableFlushes, "0.00")} ({Threads} threads). " +
                      "Raw rows: commits/s = samples ÷ summed latency; engine rows: commits ÷ wall time.");
        foreach (var r in new[] { single, group })
            if (r.Report is { IsClean: false } rep) sb.AppendLine().AppendLine($"**check faults after {r.Name}:** {string.Join("; ", rep.Faults.Take(5))}");

        double sp50 = Stats.Median(single.Latencies), gp50 = Stats.Median(group.Latencies);
        ctx.Key("commit", "1 thread: median commit latency vs raw fdatasync", Fmt.Time(sp50), Fmt.Ratio(sp50 / rawP50), "2× (two flushes per commit)");
        ctx.Key("commit", "1 thread: median commit latency vs commit-shaped raw pair", Fmt.Time(sp50), Fmt.Ratio(sp50 / pairP50), "1×");
        ctx.Key("commit", "1 thread: p99 commit latency vs raw fdatasync p99", Fmt.Time(Stats.Percentile(single.Latencies, 99)),
            Fmt.Ratio(Stats.Percentile(single.Latencies, 99) / rawP99), "2×");
        ctx.Key("commit", $"{Threads} threads: median commit latency vs raw fdatasync", Fmt.Time(gp50), Fmt.Ratio(gp50 / rawP50), "—");
        ctx.Key("commit", $"{Threads} threads: commits per durable flush", Fmt.Num((double)group.Commits / group.DurableFlushes, "0.00"), "—", "> 1 (group commit)");
        ctx.Key("commit", $"{Threads} threads vs 1 thread: commits/s", Fmt.Rate(group1, " commits/s"), Fmt.Ratio(group1 / single1), "> 1");
        return sb.ToString();
    }
}
