using System.Diagnostics;
using System.Text;
using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Transactions;

namespace Cowfish.Bench;

/// <summary>
/// Latency of small commits (one Put each), alone and from 8 threads at once (group commit),
/// against the latency of a raw 4 KiB pwrite + fdatasync on the same disk, measured in the same run.
/// </summary>
internal static class CommitBench
{
    private const int Threads = 8;

    private sealed record Result(string Name, int Commits, double Wall, List<double> Latencies, long DurableFlushes,
        long DeviceFlushes, long BytesWritten, bool Clean, string Faults);

    public static string Run(BenchContext ctx)
    {
        int n = ctx.Quick ? 800 : 20_000;
        int rawCount = ctx.Quick ? 400 : 5_000;

        ctx.Progress("commit: warming up (JIT)");
        RunEngine(ctx, "warm-1", 50, 1);
        RunEngine(ctx, "warm-8", 80, Threads);

        ctx.Progress($"commit: raw 4 KiB pwrite + fdatasync × {rawCount} (before)");
        var rawBefore = RawDisk.WriteSyncLatencies(ctx.TempPath("raw-sync.dat"), rawCount);
        ctx.Progress($"commit: 1 thread × {n} commits");
        var single = RunEngine(ctx, "1 thread, sequential commits", n, 1);
        ctx.Progress($"commit: {Threads} threads × {n / Threads} commits");
        var group = RunEngine(ctx, $"{Threads} threads, concurrent commits", n, Threads);
        ctx.Progress($"commit: raw 4 KiB pwrite + fdatasync × {rawCount} (after)");
        var rawAfter = RawDisk.WriteSyncLatencies(ctx.TempPath("raw-sync.dat"), rawCount);

        var raw = rawBefore.Concat(rawAfter).ToList();
        double rawP50 = Stats.Median(raw), rawP99 = Stats.Percentile(raw, 99);

        var sb = new StringBuilder();
        sb.AppendLine($"### Commit latency (one 8-byte key, 16-byte value per commit)");
        sb.AppendLine();
        sb.AppendLine($"Baseline: one 4 KiB pwrite + fdatasync on a preallocated file in the pool directory, {rawCount:N0} samples before and " +
                      $"{rawCount:N0} after the engine runs (pooled: median {Fmt.Time(rawP50)}, p99 {Fmt.Time(rawP99)}). " +
                      "A commit needs two flushes (nodes, then superblock), so **2× the raw median is the floor for a lone commit**. " +
                      "Latency is measured from `BeginWrite()` to the return of `Commit()`, so with 8 threads it includes waiting for the writer lock.");
        sb.AppendLine();
        var t = new Table("case", "commits", "commits/s", "median", "p99", "max", "median / raw median", "p99 / raw p99",
            "commits per durable flush", "device bytes per commit", "check");
        t.Add("raw pwrite 4 KiB + fdatasync (before)", Fmt.Count(rawBefore.Count), Fmt.Rate(1 / Stats.Median(rawBefore), ""),
            Fmt.Time(Stats.Median(rawBefore)), Fmt.Time(Stats.Percentile(rawBefore, 99)), Fmt.Time(Stats.Max(rawBefore)),
            Fmt.Ratio(Stats.Median(rawBefore) / rawP50), Fmt.Ratio(Stats.Percentile(rawBefore, 99) / rawP99), "1", "4096", "");
        t.Add("raw pwrite 4 KiB + fdatasync (after)", Fmt.Count(rawAfter.Count), Fmt.Rate(1 / Stats.Median(rawAfter), ""),
            Fmt.Time(Stats.Median(rawAfter)), Fmt.Time(Stats.Percentile(rawAfter, 99)), Fmt.Time(Stats.Max(rawAfter)),
            Fmt.Ratio(Stats.Median(rawAfter) / rawP50), Fmt.Ratio(Stats.Percentile(rawAfter, 99) / rawP99), "1", "4096", "");
        foreach (var r in new[] { single, group })
        {
            double p50 = Stats.Median(r.Latencies), p99 = Stats.Percentile(r.Latencies, 99);
            t.Add("Cowfish: " + r.Name, Fmt.Count(r.Commits), Fmt.Rate(r.Commits / r.Wall, ""), Fmt.Time(p50), Fmt.Time(p99),
                Fmt.Time(Stats.Max(r.Latencies)), Fmt.Ratio(p50 / rawP50), Fmt.Ratio(p99 / rawP99),
                Fmt.Num((double)r.Commits / r.DurableFlushes, "0.00"), Fmt.Count(r.BytesWritten / r.Commits),
                r.Clean ? "clean" : "**FAULTS**");
        }
        sb.Append(t);
        sb.AppendLine();
        double single1 = single.Commits / single.Wall, group1 = group.Commits / group.Wall;
        sb.AppendLine($"Group commit throughput gain: {Fmt.Ratio(group1 / single1)} the single-thread commits/s; " +
                      $"device flushes per durable flush: {Fmt.Num((double)single.DeviceFlushes / single.DurableFlushes, "0.00")} (1 thread), " +
                      $"{Fmt.Num((double)group.DeviceFlushes / group.DurableFlushes, "0.00")} ({Threads} threads).");
        foreach (var r in new[] { single, group })
            if (!r.Clean) sb.AppendLine().AppendLine($"**check faults after {r.Name}:** {r.Faults}");
        return sb.ToString();
    }

    private static Result RunEngine(BenchContext ctx, string name, int commits, int threads)
    {
        string path = ctx.TempPath($"commit-{threads}.pool");
        var dev = new CountingDevice(FileDevice.Open(path, create: true));
        try
        {
            using var pool = Pool.Create(dev, null, ownsDevice: true);
            TreeId tree;
            using (var tx = pool.BeginWrite()) { tree = tx.CreateTree(); tx.Commit(); }
            // Grow the pool file up front so that no measured commit pays for extending it.
            using (var tx = pool.BeginWrite())
            {
                for (int i = 0; i < 20_000; i++) tx.Put(tree, Keys.BigEndian(ulong.MaxValue - (ulong)i), new byte[16]);
                tx.Commit();
            }
            long bytes0 = dev.BytesWritten, flushes0 = dev.Flushes, durable0 = pool.DurableFlushes;
            int per = commits / threads;
            var lat = new double[threads][];
            Exception? failure = null;
            using var start = new Barrier(threads + 1);
            var workers = new Thread[threads];
            for (int t = 0; t < threads; t++)
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
                            var key = Keys.BigEndian(((ulong)tid << 32) | (uint)i);
                            long t0 = Stopwatch.GetTimestamp();
                            using (var tx = pool.BeginWrite())
                            {
                                tx.Put(tree, key, value);
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
            if (failure is not null) throw new InvalidOperationException($"a committer thread failed ({name})", failure);
            var all = lat.SelectMany(x => x).ToList();
            var report = PoolChecker.Check(pool);
            return new Result(name, per * threads, wall, all, pool.DurableFlushes - durable0, dev.Flushes - flushes0,
                dev.BytesWritten - bytes0, report.IsClean, string.Join("; ", report.Faults.Take(5)));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
