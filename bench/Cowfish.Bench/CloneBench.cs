using System.Diagnostics;
using System.Text;
using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Transactions;

namespace Cowfish.Bench;

/// <summary>
/// Whole-tree clone cost as the tree grows from 10^3 keys upward, against the clone cost at 10^3
/// in the same run (the target is flat), and a full copy (scan + insert) for contrast.
/// </summary>
internal static class CloneBench
{
    private const int BuildBatch = 1_000_000;

    private sealed record SizeResult(long Keys, double BuildSeconds, List<double> CloneOnly, List<double> CloneCommit,
        List<double> FirstWrite, List<double> Copy, double CheckSeconds, bool Clean, long Nodes, string Faults);

    public static string Run(BenchContext ctx)
    {
        int maxExp = ctx.CloneMaxExponent;
        int copyMaxExp = ctx.Quick ? 4 : 6;
        int reps = ctx.Quick ? 5 : 21;

        ctx.Progress("clone: warming up (JIT)");
        RunSizes(ctx, "clone-warm.pool", 4, 3, 3);

        var results = RunSizes(ctx, "clone.pool", maxExp, copyMaxExp, reps);
        var b = results[0];
        double bOnly = Stats.Median(b.CloneOnly), bCommit = Stats.Median(b.CloneCommit), bFirst = Stats.Median(b.FirstWrite);

        var sb = new StringBuilder();
        sb.AppendLine("### Whole-tree clone cost vs tree size (8-byte sequential keys, 8-byte values)");
        sb.AppendLine();
        sb.AppendLine($"Baseline: the same measurement at 10^3 keys, same run, same pool. Medians of {reps} repetitions. " +
                      "`CloneTree` = the call alone inside an open write transaction; `+ Commit` = CloneTree then Commit (durable: two fdatasyncs); " +
                      "first write = one Put into the fresh clone + Commit (shadows one root-to-leaf path of shared nodes). " +
                      "Each clone is dropped (and its drop drained) before the next repetition. " +
                      $"Full copy = scan the source in a read transaction and Put every entry into a new tree, one commit (median of 3, 1 at 10^6).");
        sb.AppendLine();
        var t = new Table("keys", "tree nodes", "build rate", "CloneTree", "ratio vs 10^3", "CloneTree + Commit", "ratio vs 10^3",
            "(max)", "first write to clone", "ratio vs 10^3", "full copy", "copy / (clone + commit)", "check");
        foreach (var r in results)
        {
            double only = Stats.Median(r.CloneOnly), commit = Stats.Median(r.CloneCommit), first = Stats.Median(r.FirstWrite);
            double copy = r.Copy.Count > 0 ? Stats.Median(r.Copy) : double.NaN;
            t.Add(Fmt.Pow10(r.Keys), Fmt.Count(r.Nodes), Fmt.Rate(r.Keys / r.BuildSeconds, " keys/s"),
                Fmt.Time(only), Fmt.Ratio(only / bOnly), Fmt.Time(commit), Fmt.Ratio(commit / bCommit), Fmt.Time(Stats.Max(r.CloneCommit)),
                Fmt.Time(first), Fmt.Ratio(first / bFirst),
                r.Copy.Count > 0 ? Fmt.Time(copy) : "—", r.Copy.Count > 0 ? Fmt.Ratio(copy / commit) : "—",
                (r.Clean ? "clean" : "**FAULTS**") + $" ({Fmt.Time(r.CheckSeconds)})");
        }
        sb.Append(t);
        sb.AppendLine();
        sb.AppendLine("Build rate: keys inserted per second while growing the tree to that size (1,000,000 puts per commit, " +
                      "fewer for the first sizes); tree nodes: node count reported by check (all trees).");
        foreach (var r in results)
            if (!r.Clean) sb.AppendLine().AppendLine($"**check faults at {Fmt.Pow10(r.Keys)} keys:** {r.Faults}");
        return sb.ToString();
    }

    private static List<SizeResult> RunSizes(BenchContext ctx, string file, int maxExp, int copyMaxExp, int reps)
    {
        string path = ctx.TempPath(file);
        var dev = new CountingDevice(FileDevice.Open(path, create: true));
        var results = new List<SizeResult>();
        try
        {
            using var pool = Pool.Create(dev, null, ownsDevice: true);
            TreeId src;
            using (var tx = pool.BeginWrite()) { src = tx.CreateTree(); tx.Commit(); }
            long have = 0;
            var value = new byte[8];
            for (int e = 3; e <= maxExp; e++)
            {
                long n = (long)Math.Pow(10, e);
                if (file != "clone-warm.pool") ctx.Progress($"clone: building {n:N0} keys");
                var sw = Stopwatch.StartNew();
                while (have < n)
                {
                    long end = Math.Min(n, have + BuildBatch);
                    using var tx = pool.BeginWrite();
                    for (long i = have; i < end; i++)
                    {
                        var v = new byte[8];
                        BitConverter.TryWriteBytes(v, i);
                        tx.Put(src, Keys.BigEndian((ulong)i), v);
                    }
                    tx.Commit();
                    have = end;
                }
                double build = sw.Elapsed.TotalSeconds;
                Drain(pool);
                GC.Collect();

                if (file != "clone-warm.pool") ctx.Progress($"clone: cloning at {n:N0} keys × {reps}");
                var only = new List<double>();
                var commit = new List<double>();
                var first = new List<double>();
                for (int r = 0; r < reps; r++)
                {
                    TreeId c;
                    using (var tx = pool.BeginWrite())
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        c = tx.CloneTree(src);
                        only.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                        tx.Commit();
                        commit.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                    }
                    using (var tx = pool.BeginWrite())
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        tx.Put(c, Keys.BigEndian((ulong)(r * 7919 % n)), value);
                        tx.Commit();
                        first.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                    }
                    using (var tx = pool.BeginWrite()) { tx.DropTree(c); tx.Commit(); }
                    Drain(pool);
                }

                var copy = new List<double>();
                if (e <= copyMaxExp)
                {
                    int copyReps = e >= 6 ? 1 : 3;
                    if (file != "clone-warm.pool") ctx.Progress($"clone: full copy at {n:N0} keys × {copyReps}");
                    for (int r = 0; r < copyReps; r++)
                    {
                        GC.Collect();
                        TreeId dst;
                        long count = 0;
                        var t0 = Stopwatch.GetTimestamp();
                        using (var rt = pool.BeginRead())
                        using (var tx = pool.BeginWrite())
                        {
                            dst = tx.CreateTree();
                            foreach (var kv in rt.Scan(src)) { tx.Put(dst, kv.Key, kv.Value); count++; }
                            tx.Commit();
                        }
                        copy.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                        if (count != n) throw new InvalidOperationException($"full copy saw {count} of {n} keys");
                        using (var tx = pool.BeginWrite()) { tx.DropTree(dst); tx.Commit(); }
                        Drain(pool);
                    }
                }

                if (file != "clone-warm.pool") ctx.Progress($"clone: check at {n:N0} keys");
                sw.Restart();
                var report = PoolChecker.Check(pool);
                double check = sw.Elapsed.TotalSeconds;
                results.Add(new SizeResult(n, build, only, commit, first, copy, check, report.IsClean, report.Nodes,
                    string.Join("; ", report.Faults.Take(5))));
            }
            return results;
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Commits until the background reclaim of dropped trees is done.</summary>
    private static void Drain(Pool pool)
    {
        for (int i = 0; i < 100_000; i++)
        {
            using var tx = pool.BeginWrite();
            if (tx.PendingDrops == 0) return;
            tx.Commit();
        }
        throw new InvalidOperationException("dropped trees were not reclaimed after 100,000 commits");
    }
}
