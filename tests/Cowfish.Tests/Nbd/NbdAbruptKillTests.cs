using System.Buffers.Binary;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static Cowfish.Tests.Nbd.RawNbdClient;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// The server dies or is stopped while clients write. After kill -9 and a restart, check is clean and
/// every write acknowledged before a completed flush is there (the NBD durability contract; with
/// multi-conn, a flush on one connection covers writes acknowledged on another). After SIGTERM,
/// every acknowledged write is there, flushed or not, as <c>cowfish serve</c> promises.
/// </summary>
[Collection(NbdProcessCollection.Name)]
public sealed class NbdAbruptKillTests(ITestOutputHelper output)
{
    private const int Blocks = 4096; // 16 MiB of 4 KiB blocks
    private const int PerRound = 32;

    /// <summary>The content of <paramref name="block"/> as written in <paramref name="round"/>: self-describing.</summary>
    private static byte[] Stamp(int seed, int round, int block)
    {
        var b = new byte[4096];
        ulong word = ((ulong)(uint)round << 32 | (uint)block) ^ (ulong)(uint)seed;
        for (int i = 0; i < b.Length; i += 8) BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(i), word + (ulong)i);
        return b;
    }

    /// <summary>
    /// Writes rounds of stamped blocks (pipelined on one connection), each followed by a FLUSH sent
    /// on a randomly chosen one of two connections, until the server goes away. Records, per
    /// block, every round that sent it, the newest acknowledged round and the newest flushed one.
    /// </summary>
    private sealed class StampWriter(int seed, Random rng)
    {
        public readonly Dictionary<int, List<int>> Sent = new();
        public readonly Dictionary<int, int> Acked = new();
        public readonly Dictionary<int, int> Flushed = new();
        public int Rounds, FlushedRounds, FlushesElsewhere;

        public async Task RunAsync(string socket)
        {
            await using var writes = await RawNbdClient.ConnectUnixAsync(socket);
            await using var other = await RawNbdClient.ConnectUnixAsync(socket);
            await writes.GoAsync("vm/disk.img", structured: rng.Next(2) == 0);
            await other.GoAsync("vm/disk.img", structured: rng.Next(2) == 0);
            var acked = new List<int>();
            try
            {
                for (int round = 1; ; round++)
                {
                    Rounds = round;
                    var blocks = Enumerable.Range(0, PerRound).Select(_ => rng.Next(Blocks)).Distinct().ToArray();
                    foreach (int b in blocks)
                    {
                        if (!Sent.TryGetValue(b, out var l)) Sent[b] = l = new();
                        l.Add(round);
                        await writes.SendRequestAsync(CmdWrite, (ulong)b, (ulong)b * 4096, 4096, Stamp(seed, round, b));
                    }
                    acked.Clear();
                    for (int i = 0; i < blocks.Length; i++)
                    {
                        var r = await writes.ReadReplyAsync();
                        if (r.Error != 0) return; // ESHUTDOWN: the server is stopping
                        Acked[(int)r.Cookie] = round;
                        acked.Add((int)r.Cookie);
                    }
                    bool elsewhere = rng.Next(2) == 0;
                    var f = await (elsewhere ? other : writes).CallAsync(CmdFlush, 0, 0);
                    if (f.Error != 0) return;
                    foreach (int b in acked) Flushed[b] = round;
                    FlushedRounds = round;
                    if (elsewhere) FlushesElsewhere++;
                }
            }
            catch (Exception e) when (e is IOException or EndOfStreamException or System.Net.Sockets.SocketException or InvalidDataException)
            {
                // The server went away under us.
            }
        }

        /// <summary>
        /// Reads back every block ever sent: it must hold the round <paramref name="floor"/> says
        /// survived, or a newer round that was sent; never an older one, never a torn mix.
        /// </summary>
        public async Task VerifyAsync(string socket, Func<int, int> floor)
        {
            await using var c = await RawNbdClient.ConnectUnixAsync(socket);
            await c.GoAsync("vm/disk.img");
            foreach (var (block, rounds) in Sent)
            {
                var data = (await c.CallAsync(CmdRead, (ulong)block * 4096, 4096)).Data;
                int least = floor(block);
                bool ok = rounds.Where(r => r >= least).Any(r => data.AsSpan().SequenceEqual(Stamp(seed, r, block)))
                    || (least == 0 && data.All(x => x == 0));
                string holds = data.All(x => x == 0) ? "zeros" : $"round {(BinaryPrimitives.ReadUInt64LittleEndian(data) ^ (ulong)(uint)seed) >> 32}'s data (or a torn block)";
                Assert.True(ok, $"block {block}: must hold round {least} or newer, sent in rounds [{string.Join(',', rounds)}], but holds {holds}");
            }
            await c.DisconnectAsync();
        }
    }

    private static async Task<ServedPool> ServeAsync(ITestOutputHelper output)
    {
        var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "16M");
        ServedPool.Cli("truncate", p.PoolPath, "vm/load.img", "32M");
        await p.StartAsync();
        return p;
    }

    /// <summary>fio is the load the issue names; it dies with the server, which is expected.</summary>
    private static Task<ToolResult> FioLoad(ServedPool p) =>
        Tool.RunAsync("fio", ["--name=kill-load", "--ioengine=nbd", $"--uri={p.UnixUri("vm/load.img")}",
            "--rw=randwrite", "--bs=4k", "--iodepth=16", "--time_based", "--runtime=30", "--fsync=32"], TimeSpan.FromSeconds(60), cwd: p.Dir);

    [Fact]
    public async Task EveryWriteFlushedBeforeAKillSurvivesIt()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(EveryWriteFlushedBeforeAKillSurvivesIt), seed);
        var rng = new Random(seed);
        using var p = await ServeAsync(output);
        var fio = FioLoad(p);
        var w = new StampWriter(seed, new Random(rng.Next()));
        var writer = Task.Run(() => w.RunAsync(p.Socket));
        var killAt = TimeSpan.FromMilliseconds(800 + rng.Next(1200));
        await Task.Delay(killAt);
        Assert.False(writer.IsCompleted, "the writer stopped before the kill");
        await p.KillAsync();
        await writer;
        var load = await fio;
        output.WriteLine($"killed after {killAt.TotalMilliseconds} ms: {w.Rounds} rounds sent, {w.FlushedRounds} flushed " +
            $"({w.FlushesElsewhere} flushes on the other connection); fio exit {load.Code}");
        Assert.True(w.FlushedRounds >= 3 && w.FlushesElsewhere >= 1, "too few flushes before the kill: the test proved little");

        await p.StartAsync();
        await w.VerifyAsync(p.Socket, block => w.Flushed.GetValueOrDefault(block, 0));
        await p.StopAsync();
        p.AssertCheckClean();
    }

    [Fact]
    public async Task SigtermWhileClientsWriteMakesEveryAcknowledgedWriteDurable()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(SigtermWhileClientsWriteMakesEveryAcknowledgedWriteDurable), seed);
        var rng = new Random(seed);
        using var p = await ServeAsync(output);
        var fio = FioLoad(p);
        var w = new StampWriter(seed, new Random(rng.Next()));
        var writer = Task.Run(() => w.RunAsync(p.Socket));
        await Task.Delay(TimeSpan.FromMilliseconds(800 + rng.Next(1200)));
        Assert.False(writer.IsCompleted, "the writer stopped before SIGTERM");
        await p.StopAsync(); // exits 0 with clients connected and requests in flight
        await writer;
        var load = await fio;
        output.WriteLine($"stopped: {w.Rounds} rounds sent, {w.FlushedRounds} flushed; fio exit {load.Code}");

        await p.StartAsync();
        // No flush needed: the server flushes on the way out.
        await w.VerifyAsync(p.Socket, block => w.Acked.GetValueOrDefault(block, 0));
        await p.StopAsync();
        p.AssertCheckClean();
    }
}
