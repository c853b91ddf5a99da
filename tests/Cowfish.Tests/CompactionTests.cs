using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Relocation;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Compaction empties the mostly free regions of a pool whose free space is scattered, so that it
/// comes back as long runs; bytes and sharing stay, alongside writers and across power cuts.
/// </summary>
public sealed class CompactionTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> SeedCases() => Seeds.For(2).Select(s => new object[] { s });

    /// <summary>
    /// 100 files written 64 KiB at a time in turn (every 4 MiB region holds pieces of 64 of them),
    /// then four of every five removed: each region is about a fifth full. One survivor is cloned
    /// and the volume snapshotted, so what moves is shared. Returns the model: path → bytes.
    /// </summary>
    internal static Dictionary<string, byte[]> Scattered(FileSystem fs, Random rng, int files = 100, int chunks = 6)
    {
        const int chunk = 65536;
        fs.CreateVolume("v");
        var model = new Dictionary<string, byte[]>();
        for (int f = 0; f < files; f++)
        {
            fs.CreateFile($"v/f{f}");
            model[$"v/f{f}"] = new byte[chunks * chunk];
            rng.NextBytes(model[$"v/f{f}"]);
        }
        for (int c = 0; c < chunks; c++)
            for (int f = 0; f < files; f++)
                fs.Write($"v/f{f}", (long)c * chunk, model[$"v/f{f}"].AsSpan(c * chunk, chunk));
        for (int f = 0; f < files; f++)
            if (f % 5 != 0) { fs.Remove($"v/f{f}"); model.Remove($"v/f{f}"); }
        fs.Clone("v/f0", "v/c0");
        model["v/c0"] = model["v/f0"].ToArray();
        fs.Snapshot("v", "s", readOnly: true);
        foreach (var (p, bytes) in model.ToList()) model["s" + p[1..]] = bytes.ToArray();
        fs.Reclaim();
        fs.Flush();
        return model;
    }

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void ScatteredFreeSpaceComesBackAsLongRuns(int seed)
    {
        Seeds.Announce(output, nameof(ScatteredFreeSpaceComesBackAsLongRuns), seed);
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        var model = Scattered(fs, new Random(seed));
        var usage = fs.Usage();
        ulong used = fs.Pool.Space.CountAllocated(), total = fs.Pool.Space.TotalBlocks;

        var r = PoolRelocator.Compact(fs);
        output.WriteLine($"{r}; blocks in use {used} -> {fs.Pool.Space.CountAllocated()} of {total}");

        Assert.True(r.Regions >= 3, r.ToString());
        Assert.True(r.DataBlocksMoved > 0 && r.DataBlocksLeft == 0, r.ToString());
        Assert.True(r.FreeAfter.Longest >= 4 * r.FreeBefore.Longest, $"longest free run {r.FreeBefore.Longest} -> {r.FreeAfter.Longest} blocks");
        Assert.True(r.FreeAfter.Blocks > r.FreeBefore.Blocks + 1024, $"free blocks in long runs {r.FreeBefore.Blocks} -> {r.FreeAfter.Blocks}");
        Assert.Equal(total, fs.Pool.Space.TotalBlocks);
        Assert.Equal(usage, fs.Usage());
        Assert.True(fs.Pool.Space.CountAllocated() <= used + 8, $"blocks in use {used} -> {fs.Pool.Space.CountAllocated()}");
        RelocationTests.AssertContents(fs, model, $"seed {seed}");
        using (var rt = fs.Pool.BeginRead())
            Assert.DoesNotContain(rt.ListTrees(), id => rt.Tree(id).Kind == Trees.TreeKind.Relocation);
        TreeModel.AssertClean(fs.Pool, "after compaction");
        // Compacting again (the last region the moved blocks went to may be part full) converges,
        // and the longest free run never shrinks.
        ulong longest = r.FreeAfter.Longest;
        for (int round = 1; ; round++)
        {
            var again = PoolRelocator.Compact(fs);
            output.WriteLine($"again: {again}");
            Assert.True(again.FreeAfter.Longest >= longest, again.ToString());
            longest = again.FreeAfter.Longest;
            if (again.Regions == 0) break;
            Assert.True(round < 5, $"compaction still finds regions to empty after {round} more rounds");
        }
        RelocationTests.AssertContents(fs, model, $"seed {seed}, compacted again");
        TreeModel.AssertClean(fs.Pool, "after compacting again");
    }

    /// <summary>A writer thread rewrites blocks of the survivors and the clone throughout; snapshots and clones are taken between slices.</summary>
    [Theory]
    [MemberData(nameof(SeedCases))]
    public void CompactionRunsAlongsideWritesClonesAndSnapshots(int seed)
    {
        Seeds.Announce(output, nameof(CompactionRunsAlongsideWritesClonesAndSnapshots), seed);
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        var model = Scattered(fs, new Random(seed));
        var alongside = new Alongside(fs, model, model.Keys.Where(k => k.StartsWith("v/")).ToArray(), seed);
        CompactionResult r = null!;
        long writes = alongside.WhileWriting(() =>
            r = PoolRelocator.Compact(fs, new CompactionOptions { SliceBudget = TimeSpan.Zero, AfterSlice = () => alongside.BetweenSlices(9) }), seed + 1);
        output.WriteLine($"{r}; {writes} writes alongside");
        Assert.True(r.Slices > 20 && r.DataBlocksMoved > 0, r.ToString());
        RelocationTests.AssertContents(fs, model, $"seed {seed}");
        TreeModel.AssertClean(fs.Pool, $"seed {seed}: after compaction alongside writers");
    }

    /// <summary>Each slice made durable, a power cut at sampled flushes: the pool reopens clean with every byte, and compacting again works.</summary>
    [Theory]
    [MemberData(nameof(SeedCases))]
    public void APowerCutDuringCompactionRecovers(int seed)
    {
        Seeds.Announce(output, nameof(APowerCutDuringCompactionRecovers), seed);
        var setup = new FaultInjectingDevice();
        Dictionary<string, byte[]> model;
        using (var fs = new FileSystem(Pool.Create(setup, RelocationTests.Small), ownsPool: true))
            model = Scattered(fs, new Random(seed), files: 60, chunks: 4);
        var image = setup.LiveImage();
        long flushes = Alongside.PowerCuts(image, RelocationTests.Small, model, seed, cuts: 25,
            fs => PoolRelocator.Compact(fs, new CompactionOptions { SliceBudget = TimeSpan.Zero, AfterSlice = fs.Pool.Flush }),
            (fs, ctx) =>
            {
                PoolRelocator.Compact(fs);
                RelocationTests.AssertContents(fs, model, ctx + " after compacting again");
                TreeModel.AssertClean(fs.Pool, ctx + " after compacting again");
            });
        output.WriteLine($"{flushes} flushes");
    }
}
