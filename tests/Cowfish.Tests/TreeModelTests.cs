using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Model-based random operations on the trees: insert, delete, lookup, range scans, clone tree,
/// drop tree, commit, abort and reopen, compared with one sorted dictionary per tree.
/// Check runs after every commit (strict mode).
/// </summary>
public sealed class TreeModelTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> SeedCases() => Seeds.For(4).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void RandomOperationsMatchTheModel(int seed) => Run(seed, steps: 150, opsPerStep: 400);

    /// <summary>Seeds that caught a root collapsing onto a clean child without a catalog update.</summary>
    public static IEnumerable<object[]> HugeValueSeeds() => Seeds.For(3, 1530088640, 1867016189, 282992744).Select(s => new object[] { s });

    /// <summary>Mostly huge values, small key space: leaves of one or two entries that empty, merge and collapse all the time.</summary>
    [Theory]
    [MemberData(nameof(HugeValueSeeds))]
    public void RandomOperationsWithHugeValuesMatchTheModel(int seed) => Run(seed, steps: 400, opsPerStep: 4, keySpace: 8, largeValuePercent: 70, minLargestPool: 8);

    [Fact]
    [Trait("Category", "Stress")]
    public void RandomOperationsMatchTheModelLong()
    {
        foreach (int seed in Seeds.For(20)) Run(seed, steps: 600, opsPerStep: 150);
    }

    private void Run(int seed, int steps, int opsPerStep, int keySpace = 3000, int largeValuePercent = 3, int minLargestPool = 40)
    {
        Seeds.Announce(output, nameof(RandomOperationsMatchTheModel), seed);
        var dev = new MemoryDevice();
        var options = PoolChecker.Strict(new PoolOptions { DropBudgetPerCommit = 40, CacheNodes = 256 });
        var pool = Pool.Create(dev, options);
        var committed = new TreeModel();
        var w = new Workload(seed, keySpace, largeValuePercent);
        long maxNodes = 0;
        try
        {
            for (int step = 0; step < steps; step++)
            {
                var working = committed.Copy();
                using (var tx = pool.BeginWrite())
                {
                    w.Step(tx, working, w.Rng.Next(1, opsPerStep));
                    int end = w.Rng.Next(10);
                    if (end < 7)
                    {
                        tx.Commit();
                        committed = working;
                    }
                    else tx.Abort();
                }
                committed.AssertMatches(pool, $"seed {seed} step {step}");
                if (step % 10 == 0) maxNodes = Math.Max(maxNodes, PoolChecker.Check(pool).Nodes);
                if (w.Rng.Next(15) == 0)
                {
                    pool.Dispose();
                    pool = Pool.Open(dev, options);
                    committed.AssertMatches(pool, $"seed {seed} step {step} after reopen");
                }
            }
            // Let background reclaim finish, then everything dropped must be free again.
            for (int i = 0; i < 10_000; i++)
            {
                using var tx = pool.BeginWrite();
                if (tx.PendingDrops == 0) break;
                tx.Commit();
            }
            TreeModel.AssertClean(pool, $"seed {seed} at the end");
            var report = PoolChecker.Check(pool);
            output.WriteLine($"end: generation {report.Generation}, {report.Trees} trees, {report.Nodes} nodes, {report.UsedBlocks} blocks used, {report.SharedBlocks} shared");
            output.WriteLine($"largest pool seen: {maxNodes} nodes");
            Assert.True(maxNodes > minLargestPool, $"the workload should build multi-level trees (largest pool: {maxNodes} nodes)");
            committed.AssertMatches(pool, $"seed {seed} at the end");
        }
        finally
        {
            pool.Dispose();
        }
    }
}
