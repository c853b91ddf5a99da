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
/// Defrag rewrites a fragmented file contiguously: its own data is rewritten, extents it shares
/// move whole with every sharer following them, so no byte changes and no sharing is lost; alongside
/// writers, clones and snapshots, and across power cuts.
/// </summary>
public sealed class DefragTests(ITestOutputHelper output)
{
    private const int Chunk = 16 * 4096;

    public static IEnumerable<object[]> SeedCases() => Seeds.For(2).Select(s => new object[] { s });

    /// <summary>
    /// v/a written in 64 KiB chunks in shuffled order, interleaved with v/b (so a's extents are
    /// scattered); cloned whole to v/c, part of it range-cloned into v/d, the volume snapshotted to
    /// s; then single blocks of a overwritten, so that a holds a few blocks of its own and uses some
    /// shared extents in part. Returns the model: path → bytes.
    /// </summary>
    internal static Dictionary<string, byte[]> SharedFragmented(FileSystem fs, Random rng, int chunks, int overwrites)
    {
        fs.CreateVolume("v");
        fs.CreateFile("v/a");
        fs.CreateFile("v/b");
        var a = new byte[chunks * Chunk];
        var b = new byte[chunks * Chunk];
        rng.NextBytes(a);
        rng.NextBytes(b);
        foreach (int i in Enumerable.Range(0, chunks).OrderBy(_ => rng.Next()))
        {
            fs.Write("v/a", (long)i * Chunk, a.AsSpan(i * Chunk, Chunk));
            fs.Write("v/b", (long)i * Chunk, b.AsSpan(i * Chunk, Chunk));
        }
        fs.Clone("v/a", "v/c");
        fs.CreateFile("v/d");
        fs.CloneRange("v/a", 5L * Chunk, 8L * Chunk, "v/d", 4096);
        var d = new byte[4096 + 8 * Chunk];
        a.AsSpan(5 * Chunk, 8 * Chunk).CopyTo(d.AsSpan(4096));
        fs.Snapshot("v", "s", readOnly: true);
        var model = new Dictionary<string, byte[]> { ["v/a"] = a.ToArray(), ["v/b"] = b, ["v/c"] = a.ToArray(), ["v/d"] = d };
        foreach (var (p, bytes) in model.ToList()) model["s" + p[1..]] = bytes.ToArray();
        var block = new byte[4096];
        for (int k = 0; k < overwrites; k++)
        {
            int at = rng.Next(chunks * Chunk / 4096) * 4096;
            rng.NextBytes(block);
            fs.Write("v/a", at, block);
            block.CopyTo(model["v/a"], at);
        }
        fs.Flush();
        return model;
    }

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void ASharedFileBecomesContiguousAndEverySharerFollows(int seed)
    {
        Seeds.Announce(output, nameof(ASharedFileBecomesContiguousAndEverySharerFollows), seed);
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        const int overwrites = 6;
        var model = SharedFragmented(fs, new Random(seed), chunks: 128, overwrites);
        var usage = fs.Usage();
        ulong used = fs.Pool.Space.CountAllocated();
        int before = fs.Fragments("v/a"), clone = fs.Fragments("v/c");

        var r = Defragmenter.Defragment(fs, "v/a");
        output.WriteLine($"{r}; clone {clone} -> {fs.Fragments("v/c")} fragments; blocks in use {used} -> {fs.Pool.Space.CountAllocated()}");

        Assert.Equal(before, r.FragmentsBefore);
        Assert.True(before > 100, $"the file was not fragmented ({before})");
        // Each overwritten block leaves a shared extent used in part: at most 3 breaks each.
        Assert.True(r.FragmentsAfter <= 1 + 3 * overwrites, $"{r.FragmentsAfter} fragments after defrag");
        Assert.True(r.SharedBytesMoved >= 120L * Chunk, $"only {r.SharedBytesMoved} shared bytes moved");
        Assert.True(r.BytesRewritten > 0 && r.BytesRewritten <= overwrites * 4096, $"{r.BytesRewritten} bytes rewritten");
        // The clone (and the snapshot) now point at the moved extents: it became contiguous too,
        // and not one byte of sharing was lost.
        Assert.True(fs.Fragments("v/c") <= 1 + overwrites, $"the clone has {fs.Fragments("v/c")} fragments");
        Assert.Equal(fs.Fragments("v/c"), fs.Fragments("s/c"));
        Assert.Equal(usage, fs.Usage());
        Assert.True(fs.Pool.Space.CountAllocated() <= used, $"blocks in use grew: {used} -> {fs.Pool.Space.CountAllocated()}");
        RelocationTests.AssertContents(fs, model, $"seed {seed}");
        using (var rt = fs.Pool.BeginRead())
            Assert.DoesNotContain(rt.ListTrees(), id => rt.Tree(id).Kind == Trees.TreeKind.Relocation);
        TreeModel.AssertClean(fs.Pool, "after defrag of a shared file");
    }

    [Fact]
    public void AFragmentedFileBecomesContiguousWithTheSameBytes()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/a");
        fs.CreateFile("v/b");
        var rng = new Random(11);
        var a = new byte[2 << 20];
        rng.NextBytes(a);
        // Interleaved writes of two files, in a shuffled order: a's blocks end up scattered.
        var order = Enumerable.Range(0, a.Length / 4096).OrderBy(_ => rng.Next()).ToList();
        foreach (int blk in order)
        {
            fs.Write("v/a", blk * 4096L, a.AsSpan(blk * 4096, 4096));
            fs.Write("v/b", blk * 4096L, new byte[4096]);
        }
        fs.PunchHole("v/a", 40 * 4096, 8 * 4096);
        a.AsSpan(40 * 4096, 8 * 4096).Clear();
        int before = fs.Fragments("v/a");
        var r = Defragmenter.Defragment(fs, "v/a");
        output.WriteLine(r.ToString());
        Assert.Equal(before, r.FragmentsBefore);
        Assert.True(before > 50, $"the file was not fragmented ({before})");
        Assert.Equal(1, r.FragmentsAfter);
        Assert.Equal(0, r.SharedBytesMoved);
        Assert.Equal(a, fs.ReadAll("v/a"));
        Assert.Equal(2, fs.DataRanges("v/a").Count); // the hole stays a hole
        TreeModel.AssertClean(fs.Pool, "after defrag");
    }

    /// <summary>
    /// A writer thread overwrites blocks of the file and of its clone for the whole defrag, while
    /// between slices of the walk (one block each) snapshots and range clones are taken: every
    /// file, snapshot included, ends with exactly the model's bytes, and check is clean.
    /// </summary>
    [Theory]
    [MemberData(nameof(SeedCases))]
    public void DefragRunsAlongsideWritesClonesAndSnapshots(int seed)
    {
        Seeds.Announce(output, nameof(DefragRunsAlongsideWritesClonesAndSnapshots), seed);
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        var model = SharedFragmented(fs, new Random(seed), chunks: 96, overwrites: 12);
        var alongside = new Alongside(fs, model, ["v/a", "v/a", "v/c"], seed);
        DefragResult r = null!;
        long writes = alongside.WhileWriting(() =>
            r = Defragmenter.Defragment(fs, "v/a", options: new DefragOptions { SliceBudget = TimeSpan.Zero, AfterSlice = () => alongside.BetweenSlices(7) }), seed + 1);
        int slices = alongside.Slices;
        output.WriteLine($"{r}; {slices} slices, {writes} writes alongside");
        Assert.True(slices > 20, $"only {slices} slices");
        Assert.True(r.SharedBytesMoved > 0, r.ToString());
        RelocationTests.AssertContents(fs, model, $"seed {seed}");
        TreeModel.AssertClean(fs.Pool, $"seed {seed}: after defrag alongside writers");
    }

    /// <summary>
    /// Each slice of the walk made durable, a power cut at sampled flushes: the pool reopens clean
    /// with every byte in place (defrag never changes content), and a second defrag finishes.
    /// </summary>
    [Theory]
    [MemberData(nameof(SeedCases))]
    public void APowerCutDuringDefragRecovers(int seed)
    {
        Seeds.Announce(output, nameof(APowerCutDuringDefragRecovers), seed);
        var setup = new FaultInjectingDevice();
        Dictionary<string, byte[]> model;
        using (var fs = new FileSystem(Pool.Create(setup, RelocationTests.Small), ownsPool: true))
            model = SharedFragmented(fs, new Random(seed), chunks: 48, overwrites: 8);
        var image = setup.LiveImage();
        long flushes = Alongside.PowerCuts(image, RelocationTests.Small, model, seed, cuts: 30,
            fs => output.WriteLine(Defragmenter.Defragment(fs, "v/a", options: new DefragOptions { SliceBudget = TimeSpan.Zero, AfterSlice = fs.Pool.Flush }).ToString()),
            (fs, ctx) =>
            {
                var r = Defragmenter.Defragment(fs, "v/a");
                Assert.True(r.FragmentsAfter <= 1 + 3 * 8, $"{ctx}: {r}");
                RelocationTests.AssertContents(fs, model, ctx + " after defragmenting again");
                TreeModel.AssertClean(fs.Pool, ctx + " after defragmenting again");
            });
        output.WriteLine($"{flushes} flushes");
    }

    [Fact]
    public void DefragAndRelocationTakeTurns()
    {
        using var fs = new FileSystem(Pool.Create(new MemoryDevice(), RelocationTests.Small), ownsPool: true);
        var model = SharedFragmented(fs, new Random(8), chunks: 16, overwrites: 2);
        ulong total = fs.Pool.Space.TotalBlocks;
        var e = Assert.Throws<InvalidRequestException>(() =>
            Defragmenter.Defragment(fs, "v/a", options: new DefragOptions
            {
                SliceBudget = TimeSpan.Zero,
                AfterSlice = () => PoolRelocator.Relocate(fs, total - 1),
            }));
        Assert.Contains("already running", e.Message);
        RelocationTests.AssertContents(fs, model, "after a refused defrag");
        TreeModel.AssertClean(fs.Pool, "after a refused defrag");
    }
}
