using System.Buffers.Binary;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static Cowfish.Tests.Nbd.RawNbdClient;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// kill -9 of the server while clients write: after a restart, check is clean and every write that
/// was acknowledged before a flush that completed is there (the NBD durability contract).
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

    [Fact]
    public async Task EveryWriteFlushedBeforeAKillSurvivesIt()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(EveryWriteFlushedBeforeAKillSurvivesIt), seed);
        var rng = new Random(seed);
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "16M");
        ServedPool.Cli("truncate", p.PoolPath, "vm/load.img", "32M");
        await p.StartAsync();

        // fio is the load the issue names; it dies with the server, which is expected.
        var fio = Tool.RunAsync("fio", ["--name=kill-load", "--ioengine=nbd", $"--uri={p.UnixUri("vm/load.img")}",
            "--rw=randwrite", "--bs=4k", "--iodepth=16", "--time_based", "--runtime=30", "--fsync=32"], TimeSpan.FromSeconds(60), cwd: p.Dir);

        // Per block: the rounds that sent it, and the newest round acknowledged before a completed flush.
        var sent = new Dictionary<int, List<int>>();
        var durable = new Dictionary<int, int>();
        int flushedRounds = 0, rounds = 0;
        var killAt = TimeSpan.FromMilliseconds(800 + rng.Next(1200));
        var writer = Task.Run(async () =>
        {
            await using var c = await RawNbdClient.ConnectUnixAsync(p.Socket);
            await c.GoAsync("vm/disk.img", structured: rng.Next(2) == 0);
            var acked = new List<int>();
            try
            {
                for (int round = 1; ; round++)
                {
                    rounds = round;
                    var blocks = Enumerable.Range(0, PerRound).Select(_ => rng.Next(Blocks)).Distinct().ToArray();
                    foreach (int b in blocks)
                    {
                        if (!sent.TryGetValue(b, out var l)) sent[b] = l = new();
                        l.Add(round);
                        await c.SendRequestAsync(CmdWrite, (ulong)b, (ulong)b * 4096, 4096, Stamp(seed, round, b));
                    }
                    acked.Clear();
                    for (int i = 0; i < blocks.Length; i++)
                    {
                        var r = await c.ReadReplyAsync();
                        Assert.Equal(0u, r.Error);
                        acked.Add((int)r.Cookie);
                    }
                    var f = await c.CallAsync(CmdFlush, 0, 0);
                    Assert.Equal(0u, f.Error);
                    foreach (int b in acked) durable[b] = round;
                    flushedRounds = round;
                }
            }
            catch (Exception e) when (e is IOException or EndOfStreamException or System.Net.Sockets.SocketException or InvalidDataException)
            {
                // The server was killed under us.
            }
        });
        await Task.Delay(killAt);
        Assert.False(writer.IsCompleted, "the writer stopped before the kill");
        await p.KillAsync();
        await writer;
        var load = await fio;
        output.WriteLine($"killed after {killAt.TotalMilliseconds} ms: {rounds} rounds sent, {flushedRounds} flushed; fio exit {load.Code}");
        Assert.True(flushedRounds >= 3, $"only {flushedRounds} rounds were flushed before the kill: the test proved little");

        await p.StartAsync();
        await using (var c = await RawNbdClient.ConnectUnixAsync(p.Socket))
        {
            await c.GoAsync("vm/disk.img");
            foreach (var (block, rs) in sent)
            {
                var data = (await c.CallAsync(CmdRead, (ulong)block * 4096, 4096)).Data;
                int floor = durable.GetValueOrDefault(block, 0);
                // Flushed data, or something newer that was sent later; never older, never torn.
                bool ok = rs.Where(r => r >= floor).Any(r => data.AsSpan().SequenceEqual(Stamp(seed, r, block)))
                    || (floor == 0 && data.All(x => x == 0));
                Assert.True(ok, $"block {block}: flushed in round {floor}, sent in rounds [{string.Join(',', rs)}], " +
                    $"but holds {(data.All(x => x == 0) ? "zeros" : $"round {(BinaryPrimitives.ReadUInt64LittleEndian(data) ^ (ulong)(uint)seed) >> 32}'s data")}");
            }
            await c.DisconnectAsync();
        }
        await p.StopAsync();
        p.AssertCheckClean();
    }
}
