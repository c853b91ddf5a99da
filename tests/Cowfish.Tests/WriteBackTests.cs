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
}
