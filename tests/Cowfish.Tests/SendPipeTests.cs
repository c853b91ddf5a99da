using System.IO.Pipes;
using Cowfish.Files;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// send | receive through an OS pipe, within one process (a pool is open in one process at a time):
/// into the same pool and into a second one, while another thread writes, clones, snapshots and
/// deletes on the source. No deadlock, and the received snapshot equals the source.
/// </summary>
public sealed class SendPipeTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    /// <summary>Runs send and receive on two threads joined by an anonymous pipe (64 KiB of buffer, so both block often).</summary>
    private static ReceiveResult Pipe(FileSystem from, string snap, string? parent, FileSystem to, string name)
    {
        using var server = new AnonymousPipeServerStream(PipeDirection.Out);
        using var client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle);
        var send = Task.Run(() =>
        {
            try { SendStream.Write(from, snap, parent, server); }
            finally { server.Dispose(); }
        });
        // Small batches: the receiver takes and releases the writer lock many times while the pipe is full.
        var receive = Task.Run(() => ReceiveStream.Apply(to, client, new ReceiveOptions { Name = name, BatchRecords = 4, BatchBytes = 512 << 10 }));
        Assert.True(Task.WaitAll([send, receive], Limit), "send | receive did not finish: deadlock?");
        return receive.Result;
    }

    /// <summary>Writes, clones, range clones, snapshots and deletes on volume v until stopped.</summary>
    private static Task Churn(FileSystem fs, CancellationToken stop, int seed) => Task.Run(() =>
    {
        var rng = new Random(seed);
        int n = 0;
        while (!stop.IsCancellationRequested)
        {
            n++;
            switch (rng.Next(5))
            {
                case 0: fs.Write("v/big", rng.Next(512) * 4096L, SendReceiveTests.Bytes(4096 * rng.Next(1, 8), n)); break;
                case 1: fs.Clone("v/big", $"v/c{n % 4}"); break;
                case 2: fs.Snapshot("v", $"tmp{n}", readOnly: rng.Next(2) == 0); fs.DeleteVolume($"tmp{n}"); break;
                case 3: if (fs.Exists($"v/c{n % 4}")) fs.Remove($"v/c{n % 4}"); break;
                default: fs.CreateFile($"v/n{n}"); fs.Write($"v/n{n}", 0, SendReceiveTests.Bytes(rng.Next(1, 50_000), n)); break;
            }
        }
    });

    private static void Fill(FileSystem fs)
    {
        fs.CreateVolume("v");
        fs.CreateFile("v/big");
        fs.Write("v/big", 0, SendReceiveTests.Bytes(4 << 20, 1));
        fs.Clone("v/big", "v/twin");
        for (int i = 0; i < 20; i++)
        {
            fs.CreateFile($"v/s{i}");
            fs.Write($"v/s{i}", 0, SendReceiveTests.Bytes(30_000, 10 + i));
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public Task SendPipedIntoReceiveWhileTheSourceChanges(bool samePool) => Rounds(samePool, 4);

    [Fact]
    [Trait("Category", "Stress")]
    public async Task SendPipedIntoReceiveWhileTheSourceChangesLong()
    {
        await Rounds(true, 30);
        await Rounds(false, 30);
    }

    private async Task Rounds(bool samePool, int rounds)
    {
        using var a = SendReceiveTests.NewFs();
        using var other = samePool ? null : SendReceiveTests.NewFs();
        var b = other ?? a;
        Fill(a);
        a.Snapshot("v", "s1", readOnly: true);
        using var stop = new CancellationTokenSource();
        var churn = Churn(a, stop.Token, samePool ? 1 : 2);
        try
        {
            Pipe(a, "s1", null, b, "r1");
            VolumeCompare.AssertSame(a, "s1", b, "r1", "full");
            for (int i = 2; i <= rounds; i++)
            {
                Thread.Sleep(50);
                a.Snapshot("v", $"s{i}", readOnly: true);
                var r = Pipe(a, $"s{i}", $"s{i - 1}", b, $"r{i}");
                Assert.NotNull(r.Parent);
                VolumeCompare.AssertSame(a, $"s{i}", b, $"r{i}", $"incremental {i}");
            }
        }
        finally
        {
            stop.Cancel();
            await churn.WaitAsync(Limit); // throws TimeoutException if the writer is stuck
        }
        output.WriteLine($"volumes: {string.Join(", ", b.ListVolumes().Select(v => v.Name))}");
        TreeModel.AssertClean(a.Pool, "source");
        if (!samePool) TreeModel.AssertClean(b.Pool, "target");
    }
}
