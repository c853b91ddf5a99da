using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>The write-back pipeline: acknowledged writes whose mapping is still queued.</summary>
public sealed class WriteBackTests(ITestOutputHelper output)
{
    private const int Block = 4096;

    [Fact]
    public void ReadsOfPendingWritesSeeThemWithoutWaitingForTheMapping()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(ReadsOfPendingWritesSeeThemWithoutWaitingForTheMapping), seed);
        var rng = new Random(seed);
        using var fs = new FileSystem(Pool.Create(new MemoryDevice()), ownsPool: true);
        fs.CreateVolume("v");
        fs.CreateFile("v/disk");
        const int blocks = 64;
        var model = new byte[blocks * Block];
        rng.NextBytes(model);
        fs.Write("v/disk", 0, model);
        fs.Flush();
        var h = fs.OpenFile("v/disk");

        Exception? failure = null;
        // While this transaction holds the writer lock, no mapping can commit: every write below
        // stays pending, and a read that waited for its mapping would never return.
        using (var blocker = fs.Pool.BeginWrite())
        {
            for (int i = 0; i < 200; i++)
            {
                int b = rng.Next(blocks);
                int len = Block * (1 + rng.Next(3));
                if ((long)b * Block + len > model.Length) len = Block;
                var data = new byte[len];
                rng.NextBytes(data);
                h.Write((long)b * Block, data);
                data.CopyTo(model, b * Block);
            }
            var snapshot = (byte[])model.Clone();
            var reader = new Thread(() =>
            {
              try
              {
                var buf = new byte[model.Length];
                Assert.Equal(buf.Length, h.Read(0, buf));
                Assert.True(buf.AsSpan().SequenceEqual(snapshot), "a whole-file read missed a pending write");
                for (int i = 0; i < 100; i++)
                {
                    int off = rng.Next(model.Length - 1), len = 1 + rng.Next(Math.Min(3 * Block, model.Length - off));
                    var part = new byte[len];
                    Assert.Equal(len, h.Read(off, part));
                    Assert.True(part.AsSpan().SequenceEqual(snapshot.AsSpan(off, len)), $"read {off}+{len} missed a pending write");
                }
              }
              catch (Exception e) { failure = e; }
            }) { IsBackground = true };
            reader.Start();
            Assert.True(reader.Join(TimeSpan.FromSeconds(30)), "reads waited for mappings that the held writer lock blocks");
        }
        if (failure is not null) throw new Xunit.Sdk.XunitException($"reader failed: {failure}");
        fs.Flush();
        Assert.True(fs.ReadAll("v/disk").AsSpan().SequenceEqual(model), "the mapped file differs from what was written");
        TreeModel.AssertClean(fs.Pool, "after pending reads");
    }

    /// <summary>
    /// Power cuts at every flush of a write-back workload: rounds of handle writes (mapped lazily, in
    /// batches, while reads of pending blocks run), each ended by a Flush. After every cut the pool
    /// checks clean and holds exactly the state of the last Flush that returned, or of the one in
    /// flight: a cut during a gathered batch, between a batch's node writes and its commit, or
    /// during a FLUSH waiting for its generation loses only what no Flush had acknowledged.
    /// </summary>
    [Fact]
    public void EveryFlushOfWriteBackWritesRecovers()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(EveryFlushOfWriteBackWritesRecovers), seed);
        var probe = new FaultInjectingDevice();
        var (all, _) = Run(seed, probe);
        long flushes = probe.FlushCount;
        output.WriteLine($"{flushes} flushes, {all.Count} acknowledged states");
        Assert.True(flushes >= 20, $"only {flushes} flushes");
        var rng = new Random(seed);
        for (long cut = 0; cut < flushes; cut++)
        {
            var dev = new FaultInjectingDevice();
            dev.CutAtFlush(cut);
            var (acked, inFlight) = Run(seed, dev);
            foreach (var mode in Enum.GetValues<CrashMode>())
            {
                string ctx = $"seed {seed}, cut at flush {cut}, {mode}";
                Pool pool;
                try { pool = Pool.Open(MemoryDevice.FromImage(dev.CrashImage(mode, rng))); }
                catch (CowfishException) when (acked.Count == 0) { continue; } // the pool was never made
                using var fs = new FileSystem(pool, ownsPool: true);
                TreeModel.AssertClean(pool, ctx);
                byte[]? got;
                try { got = fs.ReadAll("v/disk"); }
                catch (NotFoundException) { got = null; }
                bool last = acked.Count > 0 && got is not null && got.AsSpan().SequenceEqual(acked[^1]);
                bool flight = inFlight is not null && got is not null && got.AsSpan().SequenceEqual(inFlight);
                string Diff(byte[]? want) => want is null || got is null ? "n/a" : string.Join(",", Enumerable.Range(0, blocks).Where(i => !got.AsSpan(i * Block, Block).SequenceEqual(want.AsSpan(i * Block, Block))));
                // Before the first flushed state the setup was still under way (other crash tests
                // cover creating pools, volumes and files): a clean check is all that is asked.
                Assert.True(acked.Count == 0 || last || flight,
                    $"{ctx}: the disk matches neither the last flushed state ({acked.Count} flushed; blocks differing: {Diff(acked.Count > 0 ? acked[^1] : null)}) nor the one in flight (blocks differing: {Diff(inFlight)})");
            }
        }
    }

    /// <summary>Runs the workload until it ends or the device is cut; returns the flushed states and the one in flight.</summary>
    private const int blocks = 48;

    private static (List<byte[]> Acked, byte[]? InFlight) Run(int seed, FaultInjectingDevice dev)
    {
        var rng = new Random(seed);
        var acked = new List<byte[]>();
        byte[]? inFlight = null;
        try
        {
            using var fs = new FileSystem(Pool.Create(dev), ownsPool: true);
            fs.CreateVolume("v");
            fs.CreateFile("v/disk");
            var model = new byte[blocks * Block];
            fs.Write("v/disk", 0, model, durable: true);
            acked.Add((byte[])model.Clone());
            var h = fs.OpenFile("v/disk");
            var buf = new byte[Block];
            for (int round = 0; round < 12; round++)
            {
                for (int i = 0; i < 40; i++)
                {
                    int b = rng.Next(blocks), len = Block * (1 + rng.Next(2));
                    if ((b + 1) * Block + len > model.Length) len = Block;
                    var data = new byte[len];
                    rng.NextBytes(data);
                    h.Write((long)b * Block, data);
                    data.CopyTo(model, b * Block);
                    int r = rng.Next(blocks);
                    h.Read((long)r * Block, buf);
                    if (!buf.AsSpan().SequenceEqual(model.AsSpan(r * Block, Block))) throw new InvalidOperationException($"read of block {r} missed a write");
                }
                inFlight = (byte[])model.Clone();
                h.Flush();
                acked.Add(inFlight);
                inFlight = null;
            }
        }
        catch (CowfishException) { } // the injected power cut (or the failed pool after it)
        return (acked, inFlight);
    }
}
