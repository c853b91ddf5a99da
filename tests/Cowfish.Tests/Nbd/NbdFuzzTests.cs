using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Cowfish.Checking;
using Cowfish.Files;
using Cowfish.Nbd;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static Cowfish.Tests.Nbd.RawNbdClient;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// Bad input at the NBD edge, against an in-process server on a Unix socket: each malformed
/// handshake or request gets the reply the spec prescribes or a disconnect, is logged as one line,
/// never takes the server down, and never disturbs a well-behaved client connected all along.
/// </summary>
public sealed class NbdFuzzTests : IAsyncLifetime
{
    private const int DiskSize = 1 << 20;
    private readonly ITestOutputHelper _output;
    private readonly string _dir = Directory.CreateTempSubdirectory("cowfish-nbdfuzz-").FullName;
    private readonly FileSystem _fs;
    private readonly NbdServer _server;
    private readonly string _socket;
    // Guards _log: connection threads write it.
    private readonly List<string> _log = new();
    private readonly byte[] _pattern = new byte[64 * 1024];
    private RawNbdClient? _bystander;

    public NbdFuzzTests(ITestOutputHelper output)
    {
        _output = output;
        _fs = FileSystem.Create(Path.Combine(_dir, "p.pool"));
        _fs.CreateVolume("vm");
        _fs.CreateFile("vm/disk.img");
        _fs.Truncate("vm/disk.img", DiskSize);
        new Random(7).NextBytes(_pattern);
        _fs.Write("vm/disk.img", 0, _pattern);
        // The bystander reads this file, which nobody else writes.
        _fs.CreateFile("vm/quiet.img");
        _fs.Write("vm/quiet.img", 0, _pattern);
        _fs.Snapshot("vm", "snap", readOnly: true);
        _server = new NbdServer(_fs, new NbdServerOptions { Log = line => { lock (_log) _log.Add(line); } });
        _socket = Path.Combine(_dir, "nbd.sock");
        _server.ListenUnix(_socket);
    }

    public async Task InitializeAsync()
    {
        _bystander = await RawNbdClient.ConnectUnixAsync(_socket);
        await _bystander.GoAsync("vm/quiet.img");
    }

    public async Task DisposeAsync()
    {
        if (_bystander is not null) await _bystander.DisposeAsync();
        _server.Dispose();
        _fs.Dispose();
        lock (_log) _output.WriteLine("--- server log\n" + string.Join('\n', _log));
        Directory.Delete(_dir, recursive: true);
    }

    private string[] LogLines(string text)
    {
        lock (_log) return _log.Where(l => l.Contains(text)).ToArray();
    }

    /// <summary>The server still serves: the bystander's connection works, a new client works, nothing crashed.</summary>
    private async Task AssertHealthyAsync()
    {
        var r = await _bystander!.CallAsync(CmdRead, 0, 4096);
        Assert.Equal(0u, r.Error);
        Assert.Equal(_pattern.AsSpan(0, 4096).ToArray(), r.Data);
        await using var fresh = await RawNbdClient.ConnectUnixAsync(_socket);
        await fresh.GoAsync("vm/quiet.img", structured: false);
        var r2 = await fresh.CallAsync(CmdRead, 4096, 4096);
        Assert.Equal(_pattern.AsSpan(4096, 4096).ToArray(), r2.Data);
        await fresh.DisconnectAsync();
        // "connection failed" is what the server logs for an exception nobody expected.
        Assert.Empty(LogLines("connection failed"));
    }

    private async Task AssertPoolCleanAsync()
    {
        await _bystander!.DisconnectAsync();
        await _bystander.DisposeAsync();
        _bystander = null;
        _server.Stop();
        var report = PoolChecker.Check(_fs.Pool);
        Assert.True(report.IsClean, string.Join('\n', report.Faults));
    }

    private async Task<RawNbdClient> HandshakenAsync(string export = "vm/disk.img", bool structured = true)
    {
        var c = await RawNbdClient.ConnectUnixAsync(_socket);
        await c.GoAsync(export, structured);
        return c;
    }

    private async Task<RawNbdClient> GreetedAsync()
    {
        var c = await RawNbdClient.ConnectUnixAsync(_socket);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        return c;
    }

    [Fact]
    public async Task MalformedHandshakesDisconnectAndAreLogged()
    {
        // Bad option magic.
        await using (var c = await GreetedAsync())
        {
            await c.SendAsync(Option(OptGo, GoData("vm/disk.img"), magic: 0x1122334455667788));
            Assert.True(await c.ClosedByServerAsync(TimeSpan.FromSeconds(10)));
        }
        // Unknown client flags.
        await using (var c = await RawNbdClient.ConnectUnixAsync(_socket))
        {
            await c.ReadGreetingAsync();
            await c.SendClientFlagsAsync(0x80);
            Assert.True(await c.ClosedByServerAsync(TimeSpan.FromSeconds(10)));
        }
        // An option longer than 64 KiB: refused from its header, before its data is read.
        await using (var c = await GreetedAsync())
        {
            await c.SendAsync(Option(OptGo, [], length: 64 * 1024 + 1));
            Assert.True(await c.ClosedByServerAsync(TimeSpan.FromSeconds(10)));
        }
        // A truncated option: the client promises 100 bytes, sends 10 and leaves.
        await using (var c = await GreetedAsync())
        {
            await c.SendAsync(Option(OptGo, new byte[10], length: 100));
            c.Abort();
        }
        // NBD_OPT_EXPORT_NAME of a missing file: the protocol has no error reply for it.
        await using (var c = await GreetedAsync())
        {
            await c.SendAsync(Option(OptExportName, Encoding.UTF8.GetBytes("vm/missing.img")));
            Assert.True(await c.ClosedByServerAsync(TimeSpan.FromSeconds(10)));
        }
        await AssertHealthyAsync();
        await Task.Delay(200); // the aborted client's server side logs when its read fails
        Assert.Single(LogLines("bad option magic 0x1122334455667788; disconnecting"));
        Assert.Single(LogLines("unknown client flags 0x80; disconnecting"));
        Assert.Single(LogLines("of 65537 bytes is over the 65536-byte limit; disconnecting"));
        Assert.Single(LogLines("client went away during the handshake (option 7 data: 10 of 100 bytes)"));
        Assert.Single(LogLines("export 'vm/missing.img' refused"));
        await AssertPoolCleanAsync();
    }

    [Fact]
    public async Task BadOptionsGetErrorRepliesAndTheHandshakeGoesOn()
    {
        await using var c = await GreetedAsync();
        // Unknown option: NBD_REP_ERR_UNSUP, then the haggling continues.
        await c.SendOptionAsync(0xdead, Encoding.UTF8.GetBytes("whatever"));
        var unknown = await c.ReadOptionReplyAsync();
        Assert.Equal((0xdeadu, RepErrUnsup), (unknown.Option, unknown.Type));
        // GO whose name length runs past its data: NBD_REP_ERR_INVALID.
        var bad = GoData("vm/disk.img");
        BinaryPrimitives.WriteUInt32BigEndian(bad, 1000);
        await c.SendOptionAsync(OptGo, bad);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        // GO whose info-request count does not match what follows.
        var extra = GoData("vm/disk.img", 3);
        BinaryPrimitives.WriteUInt16BigEndian(extra.AsSpan(4 + "vm/disk.img".Length), 2);
        await c.SendOptionAsync(OptGo, extra);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        // GO for a missing export: NBD_REP_ERR_UNKNOWN.
        await c.SendOptionAsync(OptGo, GoData("vm/nope.img"));
        Assert.Equal(RepErrUnknown, (await c.ReadOptionReplyAsync()).Type);
        // LIST with data: invalid.
        await c.SendOptionAsync(OptList, [1, 2, 3]);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        // After all that, a correct GO still works and the export serves.
        await c.SendOptionAsync(OptGo, GoData("vm/disk.img"));
        var replies = await c.ReadOptionRepliesAsync();
        Assert.Equal(RepAck, replies[^1].Type);
        var read = await c.CallAsync(CmdRead, 0, 64);
        Assert.Equal(_pattern.AsSpan(0, 64).ToArray(), read.Data);
        await c.DisconnectAsync();
        await AssertHealthyAsync();
        Assert.Single(LogLines("option 57005 is not supported (NBD_REP_ERR_UNSUP)"));
        Assert.Equal(2, LogLines("malformed NBD_OPT_GO").Length);
        await AssertPoolCleanAsync();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task BadRequestsGetTheErrorsTheSpecPrescribes(bool structured)
    {
        await using (var c = await HandshakenAsync(structured: structured))
        {
            Assert.Equal((ulong)DiskSize, c.Size);
            // Past the end: EINVAL for a read, ENOSPC for a write (whose payload must be skipped).
            Assert.Equal(EINVAL, (await c.CallAsync(CmdRead, DiskSize - 512, 1024)).Error);
            Assert.Equal(EINVAL, (await c.CallAsync(CmdRead, ulong.MaxValue - 10, 512)).Error);
            Assert.Equal(ENOSPC, (await c.CallAsync(CmdWrite, DiskSize, 4096, new byte[4096])).Error);
            Assert.Equal(ENOSPC, (await c.CallAsync(CmdWriteZeroes, DiskSize - 4096, 8192)).Error);
            // Over the 32 MiB block-size maximum.
            Assert.Equal(EINVAL, (await c.CallAsync(CmdRead, 0, (32 << 20) + 1)).Error);
            Assert.Equal(EINVAL, (await c.CallAsync(CmdWrite, 0, (32 << 20) + 1, new byte[(32 << 20) + 1])).Error);
            // Unknown commands and flags, malformed flush, zero length, block status never negotiated.
            Assert.Equal(EINVAL, (await c.CallAsync(42, 0, 512)).Error);
            Assert.Equal(EINVAL, (await c.CallAsync(CmdRead, 0, 512, flags: 0x80)).Error);
            Assert.Equal(EINVAL, (await c.CallAsync(CmdWrite, 0, 512, new byte[512], flags: 0x40)).Error);
            Assert.Equal(EINVAL, (await c.CallAsync(CmdFlush, 0, 512)).Error);
            Assert.Equal(EINVAL, (await c.CallAsync(CmdRead, 0, 0)).Error);
            Assert.Equal(EINVAL, (await c.CallAsync(CmdBlockStatus, 0, 4096)).Error);
            // The connection is still in step: good requests work after all the bad ones.
            var w = new byte[4096];
            Array.Fill(w, (byte)0xc3);
            Assert.Equal(0u, (await c.CallAsync(CmdWrite, DiskSize - 4096, 4096, w, flags: FlagFua)).Error);
            Assert.Equal(w, (await c.CallAsync(CmdRead, DiskSize - 4096, 4096)).Data);
            Assert.Equal(0u, (await c.CallAsync(CmdFlush, 0, 0)).Error);
            await c.DisconnectAsync();
        }
        await using (var ro = await HandshakenAsync("snap/disk.img", structured))
        {
            Assert.NotEqual(0, ro.TransmissionFlags & TxReadOnly);
            Assert.Equal(EPERM, (await ro.CallAsync(CmdWrite, 0, 4096, new byte[4096])).Error);
            Assert.Equal(EPERM, (await ro.CallAsync(CmdTrim, 0, 4096)).Error);
            Assert.Equal(EPERM, (await ro.CallAsync(CmdWriteZeroes, 0, 4096)).Error);
            Assert.Equal(_pattern.AsSpan(0, 4096).ToArray(), (await ro.CallAsync(CmdRead, 0, 4096)).Data);
            await ro.DisconnectAsync();
        }
        // A bad request magic ends the connection.
        await using (var c = await HandshakenAsync(structured: structured))
        {
            await c.SendAsync(Request(0, CmdRead, 1, 0, 512, magic: 0xdeadbeef));
            Assert.True(await c.ClosedByServerAsync(TimeSpan.FromSeconds(10)));
        }
        await AssertHealthyAsync();
        Assert.Single(LogLines("READ at 1048064+1024 refused: past the end of the export (1048576 bytes) (EINVAL)"));
        Assert.Single(LogLines("WRITE at 1048576+4096 refused: past the end of the export (1048576 bytes) (ENOSPC)"));
        Assert.Single(LogLines("command 42 at 0+512 refused: unknown command 42 (EINVAL)"));
        Assert.Single(LogLines("WRITE at 0+4096 refused: export is read-only (EPERM)"));
        Assert.Single(LogLines("bad request magic 0xdeadbeef; disconnecting"));
        await AssertPoolCleanAsync();
    }

    [Fact]
    public async Task BlockStatusIsExactAtTheEdges()
    {
        // 600 data blocks, each followed by a hole: more extents than one reply may carry (512).
        _fs.CreateFile("vm/striped.img");
        _fs.Truncate("vm/striped.img", 1200 * 4096);
        for (int i = 0; i < 600; i++) _fs.Write("vm/striped.img", 2L * i * 4096, _pattern.AsSpan(0, 4096));
        await using var c = await RawNbdClient.ConnectUnixAsync(_socket);
        await c.GoAsync("vm/striped.img", blockStatus: true);

        var all = await c.CallAsync(CmdBlockStatus, 0, 1200 * 4096);
        Assert.Equal(0u, all.Error);
        Assert.InRange(all.Extents.Count, 1, 512);
        for (int i = 0; i < all.Extents.Count; i++)
            Assert.Equal((4096u, i % 2 == 0 ? 0u : 3u), all.Extents[i]);
        // REQ_ONE: exactly one descriptor, which may run past the request but not past the extent.
        var one = await c.CallAsync(CmdBlockStatus, 4096 + 100, 1 << 20, flags: FlagReqOne);
        Assert.Equal([(3996u, 3u)], one.Extents);
        // Unaligned and tiny requests, and the very last byte.
        var tiny = await c.CallAsync(CmdBlockStatus, 4000, 100);
        Assert.Equal([(96u, 0u), (4u, 3u)], tiny.Extents);
        var last = await c.CallAsync(CmdBlockStatus, 1200 * 4096 - 1, 1);
        Assert.Equal([(1u, 3u)], last.Extents);
        Assert.Equal(EINVAL, (await c.CallAsync(CmdBlockStatus, 1200 * 4096 - 1, 2)).Error);
        await c.DisconnectAsync();
        await AssertHealthyAsync();
        await AssertPoolCleanAsync();
    }

    [Fact]
    public async Task ClientsVanishingMidRequestHurtNobody()
    {
        // Mid-header.
        await using (var c = await HandshakenAsync())
        {
            await c.SendAsync(Request(0, CmdRead, 1, 0, 512).AsMemory(0, 11));
            c.Abort();
        }
        // Mid-payload of a write.
        await using (var c = await HandshakenAsync())
        {
            await c.SendAsync(Request(0, CmdWrite, 2, 0, 65536));
            await c.SendAsync(new byte[1000]);
            c.Abort();
        }
        // With many large reads in flight whose replies nobody will read.
        await using (var c = await HandshakenAsync())
        {
            for (ulong i = 0; i < 32; i++) await c.SendRequestAsync(CmdRead, i, 0, DiskSize);
            c.Abort();
        }
        // With writes in flight.
        await using (var c = await HandshakenAsync())
        {
            var data = new byte[65536];
            for (ulong i = 0; i < 16; i++) await c.SendRequestAsync(CmdWrite, i, i * 65536 % DiskSize, 65536, data);
            c.Abort();
        }
        await AssertHealthyAsync();
        for (int i = 0; i < 100 && _server.ConnectionCount > 1; i++) await Task.Delay(50);
        Assert.Equal(1, _server.ConnectionCount); // only the bystander is left
        Assert.Single(LogLines("client went away mid-request (11 of 28 header bytes)"));
        Assert.Single(LogLines("client went away mid-request (WRITE payload 1000 of 65536 bytes)"));
        await AssertPoolCleanAsync();
    }

    /// <summary>
    /// A correct session (handshake with structured replies and base:allocation, then one of every
    /// request, then DISC), as bytes, for the mutating fuzzer to break.
    /// </summary>
    private static byte[] ValidSession(Random rng)
    {
        var s = new MemoryStream();
        void Put(ReadOnlySpan<byte> b) => s.Write(b);
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, 3);
        Put(flags);
        Put(Option(OptStructuredReply, []));
        var meta = new MemoryStream();
        byte[] name = Encoding.UTF8.GetBytes("vm/disk.img"), ctx = Encoding.UTF8.GetBytes("base:allocation");
        var n = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(n, (uint)name.Length);
        meta.Write(n);
        meta.Write(name);
        BinaryPrimitives.WriteUInt32BigEndian(n, 1);
        meta.Write(n);
        BinaryPrimitives.WriteUInt32BigEndian(n, (uint)ctx.Length);
        meta.Write(n);
        meta.Write(ctx);
        Put(Option(OptSetMetaContext, meta.ToArray()));
        if (rng.Next(3) == 0) Put(Option(OptList, []));
        Put(Option(OptGo, GoData("vm/disk.img", 1, 2, 3)));
        for (int i = 0; i < 8; i++)
        {
            ushort type = (ushort)rng.Next(8);
            if (type == CmdDisc) continue;
            uint len = (uint)(rng.Next(1, 16) * 512);
            ulong off = (ulong)rng.Next(0, DiskSize / 512 - 16) * 512;
            if (type == CmdFlush) (off, len) = (0, 0);
            Put(Request((ushort)(rng.Next(4) == 0 ? FlagFua : 0), type, (ulong)i, off, len));
            if (type == CmdWrite)
            {
                var payload = new byte[len];
                rng.NextBytes(payload);
                Put(payload);
            }
        }
        Put(Request(0, CmdDisc, 99, 0, 0));
        return s.ToArray();
    }

    private static byte[] Mutate(byte[] valid, Random rng)
    {
        var b = valid.ToList();
        int edits = 1 + rng.Next(6);
        for (int e = 0; e < edits && b.Count > 0; e++)
        {
            switch (rng.Next(6))
            {
                case 0: b[rng.Next(b.Count)] ^= (byte)(1 << rng.Next(8)); break; // flip a bit
                case 1: b[rng.Next(b.Count)] = (byte)rng.Next(256); break; // random byte
                case 2:
                {
                    int at = rng.Next(b.Count);
                    b.RemoveRange(at, Math.Min(b.Count - at, 1 + rng.Next(16))); // delete a chunk
                    break;
                }
                case 3: b.InsertRange(rng.Next(b.Count), Enumerable.Range(0, 1 + rng.Next(32)).Select(_ => (byte)rng.Next(256))); break;
                case 4: b = b.Take(rng.Next(b.Count + 1)).ToList(); break; // truncate
                default:
                {
                    // A length or size field set to an extreme: 0, all ones, just over a limit.
                    uint[] extremes = [0, uint.MaxValue, 64 * 1024 + 1, (32u << 20) + 1, DiskSize, 4097];
                    int at = rng.Next(Math.Max(1, b.Count - 4));
                    var v = new byte[4];
                    BinaryPrimitives.WriteUInt32BigEndian(v, extremes[rng.Next(extremes.Length)]);
                    for (int i = 0; i < 4 && at + i < b.Count; i++) b[at + i] = v[i];
                    break;
                }
            }
        }
        return b.ToArray();
    }

    [Fact]
    public async Task RandomAndMutatedSessionsNeverHurtTheServer()
    {
        foreach (int seed in Seeds.For(1))
        {
            Seeds.Announce(_output, nameof(RandomAndMutatedSessionsNeverHurtTheServer), seed);
            var rng = new Random(seed);
            for (int iteration = 0; iteration < 150; iteration++)
            {
                byte[] bytes = rng.Next(10) == 0
                    ? Enumerable.Range(0, rng.Next(1, 200)).Select(_ => (byte)rng.Next(256)).ToArray() // pure noise
                    : Mutate(ValidSession(rng), rng);
                using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await s.ConnectAsync(new UnixDomainSocketEndPoint(_socket));
                using var stream = new NetworkStream(s);
                // Read replies while sending: a server blocked on a full socket must not look like a hang.
                var drain = Task.Run(async () =>
                {
                    var sink = new byte[65536];
                    try
                    {
                        while (await stream.ReadAsync(sink) > 0) { }
                    }
                    catch (IOException) { }
                });
                try
                {
                    await stream.WriteAsync(bytes);
                    // Half-close: the server sees the end of the client's bytes and must finish the session.
                    s.Shutdown(SocketShutdown.Send);
                }
                catch (IOException) { } // the server hung up first, which is fine
                catch (SocketException) { }
                var done = await Task.WhenAny(drain, Task.Delay(TimeSpan.FromSeconds(20)));
                Assert.True(done == drain, $"seed {seed} iteration {iteration}: the server neither finished nor closed the session ({bytes.Length} bytes sent)");
                if (iteration % 25 == 0) await AssertHealthyAsync();
            }
            await AssertHealthyAsync();
        }
        // The mutations must not all bounce off the handshake: many sessions reach transmission.
        int transmitting = LogLines("serving vm/disk.img").Length;
        _output.WriteLine($"{transmitting} of 150 fuzzed sessions reached transmission");
        Assert.True(transmitting >= 20, $"only {transmitting} fuzzed sessions got past the handshake");
        // A real client still gets a proper answer from the battered server.
        var info = await Tool.RunAsync("nbdinfo", "--json", $"nbd+unix:///vm/quiet.img?socket={_socket}");
        Assert.True(info.Code == 0, info.ToString());
        Assert.Contains("\"export-size\": 65536", info.Out);
        await AssertPoolCleanAsync();
    }
}
