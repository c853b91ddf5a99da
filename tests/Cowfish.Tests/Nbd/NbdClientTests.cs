using System.Security.Cryptography;
using System.Text.Json;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// Tests that run <c>cowfish serve</c> as a process share one collection, run alone after the
/// parallel ones: they would otherwise compete with the rest of the suite for the machine's two
/// cores and make the latency figures meaningless.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NbdProcessCollection
{
    public const string Name = "NBD server processes";
}

/// <summary>The real clients users run against the server: qemu-img, nbdinfo, nbdcopy, fio and libnbd.</summary>
[Collection(NbdProcessCollection.Name)]
public sealed class NbdClientTests(ITestOutputHelper output)
{
    private const long MiB = 1 << 20;

    /// <summary>
    /// A sparse raw image of <paramref name="size"/> bytes whose data regions (random bytes, 64 KiB
    /// aligned, not touching) are chosen by <paramref name="seed"/>; returns the regions in order.
    /// </summary>
    internal static List<(long Offset, long Length)> MakeSparseImage(string path, long size, int seed, int regions = 6)
    {
        var rng = new Random(seed);
        var chosen = new List<(long Offset, long Length)>();
        long slot = size / regions / (64 * 1024) * (64 * 1024);
        for (int i = 0; i < regions; i++)
        {
            long len = (1 + rng.Next(16)) * 64 * 1024;
            long start = i * slot + rng.Next((int)((slot - len) / (64 * 1024))) * 64 * 1024;
            chosen.Add((start, len));
        }
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write);
        f.SetLength(size);
        foreach (var (off, len) in chosen)
        {
            var data = new byte[len];
            rng.NextBytes(data);
            f.Position = off;
            f.Write(data);
        }
        return chosen;
    }

    private static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Tool.Hex(SHA256.HashData(f));
    }

    private static void Ok(ToolResult r) => Assert.True(r.Code == 0, r.ToString());

    [Fact]
    public async Task QemuImgInfoConvertInAndOutAndCompare()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(QemuImgInfoConvertInAndOutAndCompare), seed);
        using var p = ServedPool.Create(output, "vm");
        string src = Path.Combine(p.Dir, "src.raw");
        var regions = MakeSparseImage(src, 64 * MiB, seed);
        // One export made by the server on first use (--create), one imported before serving.
        ServedPool.Cli("import", p.PoolPath, src, "vm/imported.img");
        await p.StartAsync("--create", "64M");

        var info = await Tool.RunAsync("qemu-img", "info", "--output=json", p.UnixUri("vm/created.img"));
        Ok(info);
        using (var doc = JsonDocument.Parse(info.Out))
        {
            Assert.Equal(64 * MiB, doc.RootElement.GetProperty("virtual-size").GetInt64());
            Assert.Equal("raw", doc.RootElement.GetProperty("format").GetString());
        }

        Ok(await Tool.RunAsync("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, p.UnixUri("vm/created.img")));
        foreach (var export in new[] { p.UnixUri("vm/created.img"), p.TcpUri("vm/imported.img") })
        {
            Ok(await Tool.RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", src, export));
            string back = Path.Combine(p.Dir, "back.raw");
            File.Delete(back);
            Ok(await Tool.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", export, back));
            Assert.Equal(Sha256(src), Sha256(back));
            // Holes stay holes all the way: out of the pool, over NBD, into the host file.
            long data = regions.Sum(r => r.Length), allocated = await Tool.AllocatedBytesAsync(back);
            output.WriteLine($"{export}: {data} bytes of data, {allocated} allocated in the copy");
            Assert.True(allocated <= data + MiB, $"the copy is not sparse: {allocated} bytes allocated for {data} bytes of data");
        }

        // A difference must be seen: compare can fail.
        Ok(await Tool.RunAsync("qemu-io", "-f", "raw", "-c", $"write -P 0x5a {regions[0].Offset + 4096} 4096", p.UnixUri("vm/created.img")));
        var diff = await Tool.RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", src, p.UnixUri("vm/created.img"));
        Assert.True(diff.Code == 1, diff.ToString());
        Assert.Contains($"Content mismatch at offset {regions[0].Offset + 4096}", diff.Out);

        await p.StopAsync();
        p.AssertCheckClean();
    }

    [Fact]
    public async Task NbdinfoListsExportsAndMapsHolesAndData()
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, nameof(NbdinfoListsExportsAndMapsHolesAndData), seed);
        using var p = ServedPool.Create(output, "vm", "other");
        string src = Path.Combine(p.Dir, "src.raw");
        var regions = MakeSparseImage(src, 16 * MiB, seed, regions: 5);
        ServedPool.Cli("import", p.PoolPath, src, "vm/disk.img");
        ServedPool.Cli("mkdir", p.PoolPath, "other/dir");
        ServedPool.Cli("truncate", p.PoolPath, "other/dir/blank.img", "1M");
        ServedPool.Cli("snapshot", p.PoolPath, "vm", "snap", "--readonly");
        await p.StartAsync();

        var list = await Tool.RunAsync("nbdinfo", "--list", "--json", p.TcpUri(""));
        Ok(list);
        using (var doc = JsonDocument.Parse(list.Out))
        {
            var names = doc.RootElement.GetProperty("exports").EnumerateArray().Select(e => e.GetProperty("export-name").GetString()!).Order().ToArray();
            Assert.Equal(["other/dir/blank.img", "snap/disk.img", "vm/disk.img"], names);
            var snap = doc.RootElement.GetProperty("exports").EnumerateArray().Single(e => e.GetProperty("export-name").GetString() == "snap/disk.img");
            Assert.True(snap.GetProperty("is_read_only").GetBoolean());
            Assert.Equal(16 * MiB, snap.GetProperty("export-size").GetInt64());
        }

        foreach (var export in new[] { "vm/disk.img", "snap/disk.img" })
        {
            var map = await Tool.RunAsync("nbdinfo", "--map", "--json", p.UnixUri(export));
            Ok(map);
            // Adjacent entries of one kind may be split anywhere; merge them, then compare exactly.
            var merged = new List<(long Offset, long Length, bool Data)>();
            using (var doc = JsonDocument.Parse(map.Out))
                foreach (var e in doc.RootElement.EnumerateArray())
                {
                    long off = e.GetProperty("offset").GetInt64(), len = e.GetProperty("length").GetInt64();
                    int type = e.GetProperty("type").GetInt32();
                    Assert.True(type is 0 or 3, $"unexpected map type {type} at {off}: {map.Out}");
                    bool data = type == 0;
                    if (merged.Count > 0 && merged[^1].Data == data && merged[^1].Offset + merged[^1].Length == off)
                        merged[^1] = (merged[^1].Offset, merged[^1].Length + len, data);
                    else merged.Add((off, len, data));
                }
            var expected = new List<(long, long, bool)>();
            long at = 0;
            foreach (var (off, len) in regions)
            {
                if (off > at) expected.Add((at, off - at, false));
                expected.Add((off, len, true));
                at = off + len;
            }
            if (at < 16 * MiB) expected.Add((at, 16 * MiB - at, false));
            Assert.Equal(expected, merged);
        }

        await p.StopAsync();
        p.AssertCheckClean();
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(4, true)]
    public async Task NbdcopyRoundTripKeepsEveryByte(int connections, bool tcp)
    {
        int seed = Seeds.For(1)[0];
        Seeds.Announce(output, $"{nameof(NbdcopyRoundTripKeepsEveryByte)}({connections})", seed);
        using var p = ServedPool.Create(output, "vm");
        string src = Path.Combine(p.Dir, "src.raw"), back = Path.Combine(p.Dir, "back.raw");
        MakeSparseImage(src, 48 * MiB, seed, regions: 12);
        await p.StartAsync("--create", "48M");
        string uri = tcp ? p.TcpUri("vm/disk.img") : p.UnixUri("vm/disk.img");

        Ok(await Tool.RunAsync("nbdcopy", $"--connections={connections}", $"--threads={connections}", "--requests=16", src, uri));
        Ok(await Tool.RunAsync("nbdcopy", $"--connections={connections}", $"--threads={connections}", "--requests=16", uri, back));
        Assert.Equal(Sha256(src), Sha256(back));

        await p.StopAsync();
        // Multi-conn was used: each copy opened as many connections as asked (nbdcopy caps them at --threads).
        int served = p.LogLines("serving vm/disk.img").Length;
        Assert.True(served >= 2 * connections, $"{served} connections served for --connections={connections}");
        p.AssertCheckClean();
        // And what was acknowledged is in the pool for good, not only in the server's memory.
        var cat = CliHarness.Run("export", p.PoolPath, "vm/disk.img", Path.Combine(p.Dir, "exported.raw"));
        Assert.Equal(0, cat.Code);
        Assert.Equal(Sha256(src), Sha256(Path.Combine(p.Dir, "exported.raw")));
    }

    [Fact]
    public async Task FioRandomReadWriteVerifiesOverSeveralJobs()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "64M");
        await p.StartAsync();
        string json = Path.Combine(p.Dir, "fio.json");
        // Each job works on its own 16 MiB region (offset_increment), so verification is exact.
        var r = await Tool.RunAsync("fio", ["--name=verify", "--ioengine=nbd", $"--uri={p.UnixUri("vm/disk.img")}",
            "--rw=randrw", "--bs=4k", "--iodepth=16", "--verify=crc32c", "--verify_fatal=1", "--numjobs=4",
            "--size=6M", "--offset_increment=16M", "--group_reporting=0", "--output-format=json", $"--output={json}"],
            TimeSpan.FromSeconds(120), cwd: p.Dir);
        Ok(r);
        using (var doc = JsonDocument.Parse(File.ReadAllText(json)))
        {
            var jobs = doc.RootElement.GetProperty("jobs").EnumerateArray().ToArray();
            Assert.Equal(4, jobs.Length);
            foreach (var j in jobs)
            {
                Assert.Equal(0, j.GetProperty("error").GetInt32());
                Assert.True(j.GetProperty("write").GetProperty("io_bytes").GetInt64() > 0);
                Assert.True(j.GetProperty("read").GetProperty("io_bytes").GetInt64() > 0);
            }
        }
        Assert.DoesNotContain("verify", r.Err);
        await p.StopAsync();
        p.AssertCheckClean();
    }

    [Fact]
    public async Task ReadOnlySnapshotsAndReadOnlyServerRefuseWrites()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "4M");
        ServedPool.Cli("snapshot", p.PoolPath, "vm", "snap", "--readonly");
        await p.StartAsync();

        async Task<bool> IsReadOnly(string export)
        {
            var r = await Tool.RunAsync("nbdinfo", "--json", p.UnixUri(export));
            Ok(r);
            using var doc = JsonDocument.Parse(r.Out);
            return doc.RootElement.GetProperty("exports")[0].GetProperty("is_read_only").GetBoolean();
        }
        Assert.True(await IsReadOnly("snap/disk.img"));
        Assert.False(await IsReadOnly("vm/disk.img"));

        // qemu-io refuses to write to what the server calls read-only...
        var qio = await Tool.RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0xab 0 4k", p.UnixUri("snap/disk.img"));
        Assert.True(qio.Code != 0 || qio.Out.Contains("failed") || qio.Err.Contains("read-only") || qio.Err.Contains("Permission"), qio.ToString());
        Assert.DoesNotContain("wrote 4096", qio.Out);
        // ...and a client that writes anyway gets EPERM from the server itself.
        await using (var c = await RawNbdClient.ConnectUnixAsync(p.Socket))
        {
            await c.GoAsync("snap/disk.img");
            Assert.NotEqual(0, c.TransmissionFlags & RawNbdClient.TxReadOnly);
            var w = await c.CallAsync(RawNbdClient.CmdWrite, 0, 4096, new byte[4096]);
            Assert.Equal(RawNbdClient.EPERM, w.Error);
            var z = await c.CallAsync(RawNbdClient.CmdWriteZeroes, 0, 4096);
            Assert.Equal(RawNbdClient.EPERM, z.Error);
            var rd = await c.CallAsync(RawNbdClient.CmdRead, 0, 4096);
            Assert.Equal(0u, rd.Error);
            await c.DisconnectAsync();
        }
        await p.StopAsync(); // after it, the whole log has been read
        Assert.Single(p.LogLines("WRITE at 0+4096 refused: export is read-only (EPERM)"));

        // The whole server read-only: even a writable volume's files.
        await p.StartAsync("--read-only");
        Assert.True(await IsReadOnly("vm/disk.img"));
        await using (var c = await RawNbdClient.ConnectUnixAsync(p.Socket))
        {
            await c.GoAsync("vm/disk.img");
            Assert.Equal(RawNbdClient.EPERM, (await c.CallAsync(RawNbdClient.CmdWrite, 0, 512, new byte[512])).Error);
            Assert.Equal(RawNbdClient.EPERM, (await c.CallAsync(RawNbdClient.CmdTrim, 0, 4096)).Error);
            await c.DisconnectAsync();
        }
        await p.StopAsync();
        p.AssertCheckClean();
        // Nothing got through: the file still has no data.
        Assert.Contains("\"data_bytes\": 0,", ServedPool.Cli("stat", p.PoolPath, "vm/disk.img", "--json"));
    }

    [Fact]
    public async Task StdioModeServesLibnbdConnectCommand()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "8M");
        // libnbd's interop pattern (as with nbdkit -s): the client runs the server with the
        // connection on its stdin and stdout.
        string script = $$"""
            import nbd
            h = nbd.NBD()
            h.set_export_name("vm/disk.img")
            h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
            h.connect_command(["{{ServedPool.DotnetHost}}", "{{ServedPool.CliDll}}", "serve", "{{p.PoolPath}}", "--stdio"])
            assert h.get_size() == 8 << 20, h.get_size()
            assert not h.is_read_only()
            assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
            data = bytes(range(256)) * 256
            h.pwrite(data, 1 << 20)
            h.flush()
            assert h.pread(len(data), 1 << 20) == data
            assert h.pread(4096, 0) == bytes(4096)
            seen = []
            h.block_status(8 << 20, 0, lambda ctx, off, entries, err: seen.extend(entries))
            print("map", seen)
            assert seen[0] == 1 << 20 and seen[1] & 1 == 1, seen
            assert seen[2] == 64 << 10 and seen[3] == 0, seen
            h.shutdown()
            print("ok")
            """;
        var r = await Tool.PythonAsync(script, TimeSpan.FromSeconds(60));
        output.WriteLine(r.ToString());
        Assert.True(r.Code == 0 && r.Out.Contains("ok"), r.ToString());
        // The server exited with its client, so the pool is free again and holds the write.
        p.AssertCheckClean();
        var cat = CliHarness.Run("stat", p.PoolPath, "vm/disk.img", "--json");
        Assert.Contains("\"data_bytes\": 65536,", cat.Out);
    }
    [Fact]
    public async Task HugeSparseAndOddSizedExportsWork()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/big.img", "1T");
        ServedPool.Cli("truncate", p.PoolPath, "vm/odd.img", "1000");
        await p.StartAsync();
        // A terabyte of holes maps in a few requests, however large the export.
        var map = await Tool.RunAsync("nbdinfo", ["--map", "--totals", p.UnixUri("vm/big.img")], TimeSpan.FromSeconds(30));
        Ok(map);
        Assert.Equal("1099511627776 100.0%   3 hole,zero", map.Out.Trim());
        // The last 4 KiB of the terabyte, written and read back; writing one byte further is refused.
        Ok(await Tool.RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0x11 1099511623680 4096", "-c", "read -P 0x11 1099511623680 4096", p.UnixUri("vm/big.img")));
        // A size that is no multiple of 512: byte-granular requests up to the last byte.
        var size = await Tool.RunAsync("nbdinfo", "--size", p.TcpUri("vm/odd.img"));
        Ok(size);
        Assert.Equal("1000", size.Out.Trim());
        await using (var c = await RawNbdClient.ConnectUnixAsync(p.Socket))
        {
            await c.GoAsync("vm/odd.img");
            Assert.Equal(0u, (await c.CallAsync(RawNbdClient.CmdWrite, 995, 5, "hello"u8.ToArray())).Error);
            Assert.Equal(RawNbdClient.ENOSPC, (await c.CallAsync(RawNbdClient.CmdWrite, 996, 5, "hello"u8.ToArray())).Error);
            await c.DisconnectAsync();
        }
        var cat = await Tool.RunAsync("nbdcopy", p.UnixUri("vm/odd.img"), Path.Combine(p.Dir, "odd.raw"));
        Ok(cat);
        var odd = await File.ReadAllBytesAsync(Path.Combine(p.Dir, "odd.raw"));
        Assert.Equal(1000, odd.Length);
        Assert.Equal("hello"u8.ToArray(), odd[995..]);
        Assert.All(odd[..995], b => Assert.Equal(0, b));
        await p.StopAsync();
        p.AssertCheckClean();
    }

    [Fact]
    public async Task SocketActivationAsNbdinfoAndNbdcopyStartServers()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/disk.img", "1M");
        var list = await Tool.RunAsync("nbdinfo", ["--list", "--json", "--", "[", ServedPool.DotnetHost, ServedPool.CliDll, "serve", p.PoolPath, "]"], TimeSpan.FromSeconds(20));
        Ok(list);
        Assert.Contains("\"export-name\": \"vm/disk.img\"", list.Out);
        p.AssertCheckClean();
    }
}
