using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// The VM-fleet promise: a disk image is cloned through the control socket while fio writes to it
/// over NBD; fio never stalls for long, and the clone is the image at the clone's point in time.
/// </summary>
[Collection(NbdProcessCollection.Name)]
public sealed class NbdLiveCloneTests(ITestOutputHelper output)
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task CloneWhileFioWritesIsAPointInTimeCopyAndFioKeepsGoing()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(CloneWhileFioWritesIsAPointInTimeCopyAndFioKeepsGoing), seed);
        using var p = ServedPool.Create(output, "vm");
        // The known pattern fills the first half; fio writes the second half all along.
        string pattern = Path.Combine(p.Dir, "pattern.raw");
        var bytes = new byte[32 * MiB];
        new Random(seed).NextBytes(bytes);
        await File.WriteAllBytesAsync(pattern, bytes);
        ServedPool.Cli("import", p.PoolPath, pattern, "vm/disk.img");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "64M");
        await p.StartAsync();

        string json = Path.Combine(p.Dir, "fio.json");
        // Every write's completion time and latency, to tell a stall caused by the clone from noise.
        var launched = Stopwatch.StartNew();
        var fio = Tool.RunAsync("fio", ["--name=clone-load", "--ioengine=nbd", $"--uri={p.UnixUri("vm/disk.img")}",
            "--rw=randwrite", "--bs=4k", "--iodepth=16", "--offset=32M", "--size=32M", "--time_based", "--runtime=6",
            "--norandommap", "--randrepeat=0", "--write_lat_log=lat", "--log_avg_msec=0", "--output-format=json", $"--output={json}"], TimeSpan.FromSeconds(60), cwd: p.Dir);
        await Task.Delay(TimeSpan.FromSeconds(2)); // fio is connected and writing at full depth

        var cloneStart = launched.Elapsed;
        var cp = await Tool.RunAsync(ServedPool.DotnetHost, [ServedPool.CliDll, "cp", p.PoolPath, "vm/disk.img", "vm/clone.img"], TimeSpan.FromSeconds(30));
        var cloneEnd = launched.Elapsed;
        Assert.True(cp.Code == 0, cp.ToString());
        Assert.False(fio.IsCompleted, "fio finished before the clone: the clone did not happen under load");
        // Keep writing after the clone, over the pattern too: none of it may reach the clone.
        var over = await Tool.RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0x77 0 4M", p.UnixUri("vm/disk.img"));
        Assert.True(over.Code == 0 && over.Out.Contains("wrote 4194304"), over.ToString());

        var run = await fio;
        Assert.True(run.Code == 0, run.ToString());
        double maxMs, p99Ms;
        long ios;
        using (var doc = JsonDocument.Parse(await File.ReadAllTextAsync(json)))
        {
            var w = doc.RootElement.GetProperty("jobs")[0].GetProperty("write");
            maxMs = w.GetProperty("clat_ns").GetProperty("max").GetDouble() / 1e6;
            p99Ms = w.GetProperty("clat_ns").GetProperty("percentile").GetProperty("99.000000").GetDouble() / 1e6;
            ios = w.GetProperty("total_ios").GetInt64();
        }
        // fio's clock starts when its job does, a little after launch: widen the window to cover that.
        double from = cloneStart.TotalMilliseconds - 500, to = cloneEnd.TotalMilliseconds + 250;
        double during = 0, outside = 0;
        foreach (var line in await File.ReadAllLinesAsync(Path.Combine(p.Dir, "lat_clat.1.log")))
        {
            var f = line.Split(',');
            double at = double.Parse(f[0]), ms = double.Parse(f[1]) / 1e6;
            if (at >= from && at <= to) during = Math.Max(during, ms);
            else outside = Math.Max(outside, ms);
        }
        string figure = $"clone through the control socket took {(cloneEnd - cloneStart).TotalMilliseconds:F1} ms (process start included); " +
            $"fio 4 KiB randwrite qd16: {ios} writes, p99 {p99Ms:F2} ms, worst {maxMs:F2} ms; worst around the clone {during:F2} ms, " +
            $"elsewhere {outside:F2} ms (target 10 ms, measured by the benchmark)";
        output.WriteLine(figure);
        Console.WriteLine(figure);
        // A generous bound for a shared 2-core machine (the real target belongs to the benchmark).
        // When the machine itself stalls fio as badly away from the clone, the clone is not to blame.
        Assert.True(during < 500 || during <= 2 * outside, figure);
        Assert.True(maxMs < 2000, figure);

        // The clone is the image as it was: the pattern, untouched by the later 0x77 writes.
        string cloned = Path.Combine(p.Dir, "clone.raw");
        var copy = await Tool.RunAsync("nbdcopy", p.UnixUri("vm/clone.img"), cloned);
        Assert.True(copy.Code == 0, copy.ToString());
        var clone = await File.ReadAllBytesAsync(cloned);
        Assert.Equal(64 * MiB, clone.Length);
        Assert.True(SHA256.HashData(clone.AsSpan(0, (int)(32 * MiB))).AsSpan().SequenceEqual(SHA256.HashData(bytes)),
            "the clone's first half is not the pattern written before the clone");
        // The source did move on.
        var check = await Tool.RunAsync("qemu-io", "-f", "raw", "-c", "read -P 0x77 0 4M", p.UnixUri("vm/disk.img"));
        Assert.True(check.Code == 0 && !check.Out.Contains("Pattern verification failed"), check.ToString());

        await p.StopAsync();
        p.AssertCheckClean();
    }
}
