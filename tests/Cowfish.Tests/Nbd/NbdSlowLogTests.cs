using System.Globalization;
using System.Text.RegularExpressions;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static Cowfish.Tests.Nbd.RawNbdClient;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// What <c>cowfish serve</c> says about where time and memory went: the slow-request log
/// (<c>--slow-log MS</c>) and the stats line it prints on SIGTERM (docs/nbd.md).
/// </summary>
[Collection(NbdProcessCollection.Name)]
public sealed partial class NbdSlowLogTests(ITestOutputHelper output)
{
    private const int MiB = 1 << 20;

    /// <summary>The phases of a slow-log line, in the order the server prints them.</summary>
    private static readonly string[] PhaseNames = ["recv", "queued", "lock", "read", "cow", "map", "commit", "flush", "reply", "other"];

    [GeneratedRegex(@"cowfish serve: (\[\d+\] unix): slow (\S+) at (\d+)\+(\d+) of (\S+): (\d+\.\d{3}) ms \((.*)\)$")]
    private static partial Regex SlowLine();

    [GeneratedRegex(@"cowfish serve: stats: (\d+) requests, (\d+) bytes allocated \((\d+) per request\), collections gen0 (\d+) gen1 (\d+) gen2 (\d+), GC pause (\d+\.\d{3}) ms$")]
    private static partial Regex StatsLine();

    private sealed record Slow(string Connection, string Type, long Offset, long Length, string Export, double Total, Dictionary<string, double> Phases);

    private static List<Slow> SlowLines(ServedPool p)
    {
        var result = new List<Slow>();
        foreach (var line in p.LogLines(": slow "))
        {
            var m = SlowLine().Match(line.TrimEnd('\r'));
            Assert.True(m.Success, $"a slow-log line that does not parse: {line}");
            var phases = new Dictionary<string, double>();
            var names = new List<string>();
            foreach (var part in m.Groups[7].Value.Split(", "))
            {
                var kv = part.Split(' ');
                Assert.True(kv.Length == 2 && Regex.IsMatch(kv[1], @"^\d+\.\d{3}$"), $"phase '{part}' in: {line}");
                names.Add(kv[0]);
                phases[kv[0]] = double.Parse(kv[1], CultureInfo.InvariantCulture);
            }
            Assert.True(names.SequenceEqual(PhaseNames), $"phases {string.Join(',', names)} instead of {string.Join(',', PhaseNames)} in: {line}");
            result.Add(new Slow(m.Groups[1].Value, m.Groups[2].Value, long.Parse(m.Groups[3].Value), long.Parse(m.Groups[4].Value),
                m.Groups[5].Value, double.Parse(m.Groups[6].Value, CultureInfo.InvariantCulture), phases));
        }
        return result;
    }

    [Fact]
    public async Task SlowLogZeroLogsEveryRequestWithEveryPhase()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "1M");
        await p.StartAsync("--slow-log", "0");

        // One request of each kind, one at a time.
        var sent = new List<(string Type, long Offset, long Length)>();
        await using (var c = await RawNbdClient.ConnectUnixAsync(p.Socket))
        {
            await c.GoAsync("vm/disk.img", blockStatus: true);
            async Task Call(string name, ushort type, ulong offset, uint length, byte[]? payload = null, ushort flags = 0)
            {
                var r = await c.CallAsync(type, offset, length, payload, flags);
                Assert.True(r.Error == 0, $"{name} at {offset}+{length}: error {r.Error} {r.Message}");
                sent.Add((name, (long)offset, length));
            }
            var data = new byte[8192];
            new Random(5).NextBytes(data);
            // The first write leads its own mapping, commit and flush (FUA), since nothing is queued.
            await Call("WRITE+FUA", CmdWrite, 8192, 4096, data[..4096], FlagFua);
            // Unaligned: the two edge blocks are read first (read-modify-write).
            await Call("WRITE", CmdWrite, 100, 5000, data[..5000]);
            await Call("READ", CmdRead, 0, 8192);
            // The unaligned write is not durable yet: this flush has work to do.
            await Call("FLUSH", CmdFlush, 0, 0);
            await Call("TRIM", CmdTrim, 65536, 65536);
            await Call("WRITE_ZEROES", CmdWriteZeroes, 0, 4096);
            await Call("BLOCK_STATUS", CmdBlockStatus, 0, MiB);
            await Call("CACHE", CmdCache, 0, 4096);
            await c.DisconnectAsync();
        }
        await p.StopAsync();

        // A line is written once the reply is out, so the next request's line may come first.
        var lines = SlowLines(p).ToDictionary(l => l.Type);
        Assert.Equal(sent.Select(s => s.Type).Order(), lines.Keys.Order());
        string connection = Assert.Single(lines.Values.Select(l => l.Connection).Distinct());
        Assert.Single(p.LogLines($"{connection}: serving vm/disk.img"));
        foreach (var (type, offset, length) in sent)
        {
            var l = lines[type];
            Assert.Equal((offset, length, "vm/disk.img"), (l.Offset, l.Length, l.Export));
            Assert.True(l.Total > 0, $"{type}: total {l.Total}");
            // Each phase is printed rounded to a microsecond, so the sum may be over by half of one each.
            double sum = l.Phases.Values.Sum();
            Assert.True(sum <= l.Total + PhaseNames.Length * 0.0005 + 1e-9, $"{type}: phases add up to {sum:F3} ms, more than the total {l.Total:F3} ms");
            // Every tick of a request is charged to one phase, so nothing is missing either.
            Assert.True(sum >= l.Total - PhaseNames.Length * 0.0005 - 0.002, $"{type}: phases add up to {sum:F3} ms of {l.Total:F3} ms");
        }
        string Show(string type) => $"{type}: {string.Join(", ", lines[type].Phases)}";
        // The engine's marks land in the phases that did the work.
        var fua = lines["WRITE+FUA"].Phases;
        Assert.True(fua["cow"] > 0 && fua["commit"] > 0 && fua["flush"] > 0, Show("WRITE+FUA"));
        var rmw = lines["WRITE"].Phases;
        Assert.True(rmw["read"] > 0 && rmw["cow"] > 0, Show("WRITE"));
        Assert.True(lines["READ"].Phases["read"] > 0 && lines["READ"].Phases["reply"] > 0, Show("READ"));
        Assert.True(lines["FLUSH"].Phases["flush"] > 0, Show("FLUSH"));
        Assert.True(lines["BLOCK_STATUS"].Phases["read"] > 0, Show("BLOCK_STATUS"));
        foreach (var type in new[] { "READ", "FLUSH", "BLOCK_STATUS", "CACHE" })
        {
            var ph = lines[type].Phases;
            Assert.True(ph["lock"] == 0 && ph["cow"] == 0 && ph["commit"] == 0, $"took a range lock or wrote: {Show(type)}");
        }
        Assert.Matches(@"stats: 8 requests,", Assert.Single(p.LogLines("cowfish serve: stats:")));
        p.AssertCheckClean();
    }

    [Fact]
    public async Task SigtermPrintsOneStatsLineWithSaneNumbers()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "4M");
        var bad = CliHarness.Run("serve", p.PoolPath, "--slow-log", "soon");
        Assert.True(bad.Code != 0 && bad.Err.Contains("--slow-log takes milliseconds"), $"exit {bad.Code}: {bad.Err}");
        // A threshold no request reaches: phases are recorded, nothing is logged.
        await p.StartAsync("--slow-log", "60000");

        const int rounds = 100;
        await using (var c = await RawNbdClient.ConnectUnixAsync(p.Socket))
        {
            await c.GoAsync("vm/disk.img");
            var data = new byte[4096];
            for (int i = 0; i < rounds; i++)
            {
                data[0] = (byte)i;
                Assert.Equal(0u, (await c.CallAsync(CmdWrite, (ulong)(i % 64) * 4096, 4096, data)).Error);
                Assert.Equal(0u, (await c.CallAsync(CmdRead, (ulong)(i % 64) * 4096, 4096)).Error);
            }
            Assert.Equal(0u, (await c.CallAsync(CmdFlush, 0, 0)).Error);
            await c.DisconnectAsync();
        }
        await p.StopAsync();

        Assert.Empty(p.LogLines(": slow "));
        var line = Assert.Single(p.LogLines("cowfish serve: stats:"));
        var m = StatsLine().Match(line.TrimEnd('\r'));
        Assert.True(m.Success, $"the stats line does not parse: {line}");
        long requests = long.Parse(m.Groups[1].Value), allocated = long.Parse(m.Groups[2].Value), perRequest = long.Parse(m.Groups[3].Value);
        int gen0 = int.Parse(m.Groups[4].Value), gen1 = int.Parse(m.Groups[5].Value), gen2 = int.Parse(m.Groups[6].Value);
        double pause = double.Parse(m.Groups[7].Value, CultureInfo.InvariantCulture);
        output.WriteLine(line);
        Assert.Equal(2 * rounds + 1, requests);
        Assert.True(allocated > 0, line);
        Assert.Equal(allocated / requests, perRequest);
        // The engine allocates a few kilobytes per write; a megabyte a request would be a leak of buffers.
        Assert.True(perRequest < MiB, line);
        // A collection of a generation collects the younger ones too.
        Assert.True(gen0 >= gen1 && gen1 >= gen2 && gen2 >= 0, line);
        Assert.True(pause >= 0, line);
        // The stats come before the last line, once the requests are answered.
        Assert.True(p.Log.IndexOf("cowfish serve: stats:", StringComparison.Ordinal) < p.Log.IndexOf("every acknowledged write is durable", StringComparison.Ordinal));
        p.AssertCheckClean();
    }
}
