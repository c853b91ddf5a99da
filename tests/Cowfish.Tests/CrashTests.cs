using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Power cuts at every flush of a random workload. After each cut the crash image is reopened
/// (with nothing since the last flush, with the last write torn, or with a random subset of the
/// unflushed writes); check must be clean and the trees must equal the model at the last
/// acknowledged commit, or at the commit in flight when the power went (its outcome is unknown
/// to the caller, as with any storage engine).
/// </summary>
public sealed class CrashTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> SeedCases() => Seeds.For(3).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void EveryFlushIndexRecoversToACommittedState(int seed) => Run(seed, commits: 40);

    [Fact]
    [Trait("Category", "Stress")]
    public void EveryFlushIndexRecoversLong()
    {
        foreach (int seed in Seeds.For(10)) Run(seed, commits: 80);
    }

    /// <summary>Runs the workload; returns the models of acknowledged commits, and the one in flight when it failed.</summary>
    private static (List<TreeModel> Acked, TreeModel? InFlight, bool Failed) Workload(int seed, int commits, FaultInjectingDevice dev)
    {
        var acked = new List<TreeModel>();
        Pool pool;
        try { pool = Pool.Create(dev, new PoolOptions { DropBudgetPerCommit = 8, CacheNodes = 128 }); }
        catch (CowfishException) { return (acked, new TreeModel(), true); }
        var committed = new TreeModel();
        acked.Add(committed);
        var w = new Workload(seed, keySpace: 1500);
        try
        {
            for (int c = 0; c < commits; c++)
            {
                var working = committed.Copy();
                using var tx = pool.BeginWrite();
                w.Step(tx, working, w.Rng.Next(1, 120));
                try { tx.Commit(); }
                catch (CowfishException) { return (acked, working, true); }
                committed = working;
                acked.Add(committed);
            }
        }
        catch (CowfishException) { return (acked, null, true); }
        finally { pool.Dispose(); }
        return (acked, null, false);
    }

    private void Run(int seed, int commits)
    {
        Seeds.Announce(output, nameof(EveryFlushIndexRecoversToACommittedState), seed);
        var probe = new FaultInjectingDevice();
        var (all, _, failed) = Workload(seed, commits, probe);
        Assert.False(failed);
        long flushes = probe.FlushCount;
        output.WriteLine($"{flushes} flushes, {all.Count} commits");
        var rng = new Random(seed);
        for (long cut = 0; cut < flushes; cut++)
        {
            var dev = new FaultInjectingDevice();
            dev.CutAtFlush(cut);
            var (acked, inFlight, cutHit) = Workload(seed, commits, dev);
            Assert.True(cutHit, $"cut at flush {cut} was never reached");
            foreach (var mode in Enum.GetValues<CrashMode>())
            {
                var image = dev.CrashImage(mode, rng);
                string ctx = $"seed {seed}, cut at flush {cut}, {mode}";
                Pool pool;
                try { pool = Pool.Open(MemoryDevice.FromImage(image)); }
                catch (CowfishException e) when (acked.Count == 0)
                {
                    // The power went before mkfs finished: there is no pool, and nothing was promised.
                    Assert.True(e is NotAPoolException or CorruptionException, $"{ctx}: {e}");
                    continue;
                }
                using (pool)
                {
                    var report = PoolChecker.Check(pool);
                    Assert.True(report.IsClean, $"{ctx}: check found faults:\n{string.Join("\n", report.Faults.Take(20))}");
                    var last = acked.Count > 0 ? acked[^1] : new TreeModel();
                    try { last.AssertMatches(pool, ctx + " (last acknowledged)"); }
                    catch (Exception) when (inFlight is not null)
                    {
                        inFlight.AssertMatches(pool, ctx + " (in-flight commit)");
                    }
                    // The recovered pool must take new work.
                    using (var tx = pool.BeginWrite())
                    {
                        var t = tx.CreateTree();
                        tx.Put(t, [1, 2, 3], [4, 5, 6]);
                        tx.Commit();
                    }
                    TreeModel.AssertClean(pool, ctx + " after a new commit");
                }
            }
        }
    }
}
