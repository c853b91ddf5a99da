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
        var rng = new Random(seed);
        var model = Scattered(fs, rng);
        var live = model.Keys.Where(k => k.StartsWith("v/")).ToArray();
        var gate = new object();
        bool stop = false;
        long writes = 0;
        var writer = new Thread(() =>
        {
            var wr = new Random(seed + 1);
            var block = new byte[4096];
            while (!Volatile.Read(ref stop))
            {
                string p = live[wr.Next(live.Length)];
                int at = wr.Next(model[p].Length / 4096) * 4096;
                wr.NextBytes(block);
                lock (gate)
                {
                    fs.Write(p, at, block);
                    block.CopyTo(model[p], at);
                }
                writes++;
            }
        });
        int slices = 0;
        var options = new CompactionOptions
        {
            SliceBudget = TimeSpan.Zero,
            AfterSlice = () =>
            {
                if (++slices % 9 != 0) return;
                lock (gate)
                {
                    if (slices % 27 == 0)
                    {
                        string s = $"t{slices}";
                        fs.Snapshot("v", s, readOnly: true);
                        foreach (var p in model.Keys.Where(k => k.StartsWith("v/")).ToList()) model[s + p[1..]] = model[p].ToArray();
                    }
                    else
                    {
                        string src = live[rng.Next(live.Length)], e = $"v/e{slices}";
                        fs.CreateFile(e);
                        fs.CloneRange(src, 65536, 131072, e, 0);
                        model[e] = model[src].AsSpan(65536, 131072).ToArray();
                    }
                }
            },
        };
        writer.Start();
        CompactionResult r;
        try { r = PoolRelocator.Compact(fs, options); }
        finally
        {
            Volatile.Write(ref stop, true);
            writer.Join();
        }
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
        CompactionOptions Durable(Pool pool) => new() { SliceBudget = TimeSpan.Zero, AfterSlice = pool.Flush };

        var probe = new FaultInjectingDevice(image);
        using (var fs = new FileSystem(Pool.Open(probe, RelocationTests.Small), ownsPool: true))
        {
            var r = PoolRelocator.Compact(fs, Durable(fs.Pool));
            output.WriteLine(r.ToString());
            Assert.True(r.Slices > 10, r.ToString());
        }
        long flushes = probe.FlushCount;
        long step = Math.Max(1, flushes / 25);
        var rng = new Random(seed);
        for (long cut = rng.Next((int)step); cut < flushes; cut += step)
        {
            var dev = new FaultInjectingDevice(image);
            dev.CutAtFlush(cut);
            try
            {
                using var fs = new FileSystem(Pool.Open(dev, RelocationTests.Small), ownsPool: true);
                PoolRelocator.Compact(fs, Durable(fs.Pool));
            }
            catch (CowfishException) { }
            Assert.True(dev.IsDead, $"cut at flush {cut} never happened");
            string ctx = $"seed {seed}, cut at flush {cut} of {flushes}";
            using var again = new FileSystem(Pool.Open(MemoryDevice.FromImage(dev.CrashImage(CrashMode.RandomSubset, rng)), RelocationTests.Small), ownsPool: true);
            var report = PoolChecker.Check(again.Pool);
            Assert.True(report.IsClean, $"{ctx}: check found faults:\n{string.Join("\n", report.Faults.Take(20))}");
            RelocationTests.AssertContents(again, model, ctx);
            PoolRelocator.Compact(again);
            RelocationTests.AssertContents(again, model, ctx + " after compacting again");
            TreeModel.AssertClean(again.Pool, ctx + " after compacting again");
        }
    }
}
