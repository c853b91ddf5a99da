using Cowfish.Checking;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>Interrupted receives: input that stops midway, power cuts at every few flushes; then resume with the token, or abort.</summary>
public sealed class ResumeTests(ITestOutputHelper output)
{
    private static readonly ReceiveOptions Small = new() { BatchRecords = 3, BatchBytes = 256 << 10, FlushBytes = 256 << 10 };

    private static FileSystem Source(out byte[] full)
    {
        var a = SendReceiveTests.NewFs();
        SendReceiveTests.Populate(a, "v");
        for (int i = 0; i < 6; i++)
        {
            a.CreateFile($"v/f{i}");
            a.Write($"v/f{i}", 0, SendReceiveTests.Bytes(300_000 + i * 7000, 40 + i));
        }
        a.Clone("v/f1", "v/f1c");
        a.Snapshot("v", "s1", readOnly: true);
        full = SendReceiveTests.Send(a, "s1");
        return a;
    }

    [Fact]
    public void InputThatStopsMidwayResumesFromTheToken()
    {
        using var a = Source(out var full);
        using var b = SendReceiveTests.NewFs();
        int cut = full.Length * 3 / 5;
        var e = Assert.Throws<InvalidStreamException>(() => ReceiveStream.Apply(b, new MemoryStream(full[..cut]), Small));
        Assert.Contains("truncated", e.Message);
        Assert.Empty(b.ListVolumes());
        var pending = ReceiveStream.Pending(b);
        Assert.NotNull(pending);
        Assert.Equal("s1", pending!.Name);
        Assert.True(pending.StreamOffset > 0 && pending.StreamOffset <= cut);
        TreeModel.AssertClean(b.Pool, "after the interruption");

        // A fresh stream is refused while the partial receive is pending.
        Assert.Throws<InvalidRequestException>(() => SendReceiveTests.Receive(b, full));
        // A token for another snapshot, or without the parent, is refused by the sender.
        Assert.Throws<InvalidRequestException>(() => SendReceiveTests.Send(a, "s1", "s1", new SendOptions { ResumeToken = pending.ResumeToken }));

        var rest = SendReceiveTests.Send(a, "s1", null, new SendOptions { ResumeToken = pending.ResumeToken });
        Assert.True(rest.Length < full.Length - pending.StreamOffset + 4096, $"resumed stream of {rest.Length} bytes, {full.Length - pending.StreamOffset} were left");
        var r = ReceiveStream.Apply(b, new MemoryStream(rest), Small);
        Assert.True(r.Resumed);
        Assert.Null(ReceiveStream.Pending(b));
        VolumeCompare.AssertSame(a, "s1", b, "s1");
        TreeModel.AssertClean(b.Pool, "after the resume");
    }

    [Fact]
    public void CrcsOfBlocksCombineLikeTheBytes()
    {
        var rng = new Random(3);
        foreach (int n in new[] { 0, 1, 20, 4095, 4096, 10_000 })
        {
            var a = new byte[n];
            var b = new byte[4096];
            rng.NextBytes(a);
            rng.NextBytes(b);
            uint whole = Cowfish.Format.Crc32C.Compute([.. a, .. b]);
            Assert.Equal(whole, Crc32CBlocks.Append(Cowfish.Format.Crc32C.Compute(a), Cowfish.Format.Crc32C.Compute(b)));
            uint state = Cowfish.Format.Crc32C.Update(0xFFFFFFFFu, a);
            Assert.Equal(whole, ~Crc32CBlocks.AppendToState(state, Cowfish.Format.Crc32C.Compute(b)));
        }
    }

    [Fact]
    public void AResumedSendDoesNotReadTheDataItSkips()
    {
        using var a = Source(out var full);
        using var b = SendReceiveTests.NewFs();
        Assert.Throws<InvalidStreamException>(() => ReceiveStream.Apply(b, new MemoryStream(full[..(full.Length * 4 / 5)]), Small));
        var token = ReceiveStream.Pending(b)!.ResumeToken;
        a.Flush();
        var image = ((MemoryDevice)a.Pool.Device).ToArray();
        long ReadsOf(SendOptions? options)
        {
            var dev = new CountingDevice(MemoryDevice.FromImage(image));
            using var fs = new FileSystem(Pool.Open(dev), ownsPool: true);
            long before = dev.BytesRead;
            SendStream.Write(fs, "s1", null, Stream.Null, options);
            return dev.BytesRead - before;
        }
        long fullReads = ReadsOf(null), resumedReads = ReadsOf(new SendOptions { ResumeToken = token });
        output.WriteLine($"full send read {fullReads} bytes, the resumed one {resumedReads}");
        Assert.True(resumedReads < fullReads / 2, $"the resumed send read {resumedReads} bytes, the full one {fullReads}");
        var rest = SendReceiveTests.Send(a, "s1", null, new SendOptions { ResumeToken = token });
        ReceiveStream.Apply(b, new MemoryStream(rest), Small);
        VolumeCompare.AssertSame(a, "s1", b, "s1");
        TreeModel.AssertClean(b.Pool, "after the resume");
    }

    [Fact]
    public void ResumingTwiceAndResumingAnIncrementalWork()
    {
        using var a = Source(out var full);
        using var b = SendReceiveTests.NewFs();
        SendReceiveTests.Receive(b, full);
        foreach (int i in new[] { 0, 1, 2, 4, 5 }) a.Write($"v/f{i}", 4096, SendReceiveTests.Bytes(200_000, 77 + i));
        a.Remove("v/f3");
        a.Snapshot("v", "s2", readOnly: true);
        var inc = SendReceiveTests.Send(a, "s2", "s1");
        Assert.Throws<InvalidStreamException>(() => ReceiveStream.Apply(b, new MemoryStream(inc[..(inc.Length / 3)]), Small));
        var token = ReceiveStream.Pending(b)!.ResumeToken;
        var rest = SendReceiveTests.Send(a, "s2", "s1", new SendOptions { ResumeToken = token });
        Assert.Throws<InvalidStreamException>(() => ReceiveStream.Apply(b, new MemoryStream(rest[..(rest.Length / 2)]), Small));
        var token2 = ReceiveStream.Pending(b)!.ResumeToken;
        Assert.NotEqual(token, token2);
        // The first token is stale now: its stream does not continue the pending receive.
        Assert.Throws<InvalidRequestException>(() => ReceiveStream.Apply(b, new MemoryStream(rest), Small));
        var rest2 = SendReceiveTests.Send(a, "s2", "s1", new SendOptions { ResumeToken = token2 });
        ReceiveStream.Apply(b, new MemoryStream(rest2), Small);
        VolumeCompare.AssertSame(a, "s2", b, "s2");
        TreeModel.AssertClean(b.Pool, "after two resumes");
    }

    [Fact]
    public void AbortRemovesThePartialReceiveAndItsSpace()
    {
        using var a = Source(out var full);
        using var b = SendReceiveTests.NewFs();
        b.CreateVolume("keep");
        b.Flush();
        ulong usedBefore = PoolChecker.Check(b.Pool).UsedBlocks;
        Assert.Throws<InvalidStreamException>(() => ReceiveStream.Apply(b, new MemoryStream(full[..(full.Length - 100)]), Small));
        Assert.NotNull(ReceiveStream.Pending(b));
        Assert.True(PoolChecker.Check(b.Pool).UsedBlocks > usedBefore + 200);
        Assert.True(ReceiveStream.Abort(b));
        Assert.False(ReceiveStream.Abort(b));
        Assert.Null(ReceiveStream.Pending(b));
        Assert.Equal(["keep"], b.ListVolumes().Select(v => v.Name));
        var report = PoolChecker.Check(b.Pool);
        Assert.True(report.IsClean, string.Join("\n", report.Faults));
        Assert.True(report.UsedBlocks < usedBefore + 20, $"{report.UsedBlocks} blocks used after the abort, {usedBefore} before");
        SendReceiveTests.Receive(b, full);
        VolumeCompare.AssertSame(a, "s1", b, "s1");
        TreeModel.AssertClean(b.Pool, "after receiving again");
    }

    [Fact]
    public void PowerCutsDuringAReceiveRecoverAndResume()
    {
        using var a = Source(out var full);
        var probe = new FaultInjectingDevice();
        long before, after;
        using (var fs = new FileSystem(Pool.Create(probe), ownsPool: true))
        {
            before = probe.FlushCount;
            ReceiveStream.Apply(fs, new MemoryStream(full), Small);
            after = probe.FlushCount;
        }
        output.WriteLine($"flushes {before}..{after}");
        Assert.True(after - before >= 4, $"only {after - before} flushes during the receive");
        var rng = new Random(5);
        int resumed = 0;
        for (long cut = before; cut < after; cut++)
        {
            var dev = new FaultInjectingDevice();
            dev.CutAtFlush(cut);
            using (var fs = new FileSystem(Pool.Create(dev), ownsPool: true))
                Assert.ThrowsAny<CowfishException>(() => ReceiveStream.Apply(fs, new MemoryStream(full), Small));
            foreach (var mode in new[] { CrashMode.DropUnflushed, CrashMode.RandomSubset })
            {
                string ctx = $"cut at flush {cut}, {mode}";
                using var fs = new FileSystem(Pool.Open(MemoryDevice.FromImage(dev.CrashImage(mode, rng))), ownsPool: true);
                TreeModel.AssertClean(fs.Pool, ctx);
                var names = fs.ListVolumes().Select(v => v.Name).ToList();
                if (names.Count == 0)
                {
                    if (ReceiveStream.Pending(fs) is { } p)
                    {
                        var rest = SendReceiveTests.Send(a, "s1", null, new SendOptions { ResumeToken = p.ResumeToken });
                        Assert.True(ReceiveStream.Apply(fs, new MemoryStream(rest), Small).Resumed, ctx);
                        resumed++;
                    }
                    else ReceiveStream.Apply(fs, new MemoryStream(full), Small);
                }
                else Assert.Equal(["s1"], names);
                VolumeCompare.AssertSame(a, "s1", fs, "s1", ctx);
                TreeModel.AssertClean(fs.Pool, ctx + " after completing");
            }
        }
        Assert.True(resumed > 0, "no power cut left a receive to resume");
    }
}
