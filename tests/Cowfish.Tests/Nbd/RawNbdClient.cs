using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Cowfish.Tests.Nbd;

/// <summary>A reply to one transmission request: its cookie, its error (0 for success), and read data.</summary>
internal sealed record NbdReply(ulong Cookie, uint Error, byte[] Data, string Message)
{
    /// <summary>base:allocation descriptors of a BLOCK_STATUS reply: length and flags (1 hole, 2 zero).</summary>
    public List<(uint Length, uint Flags)> Extents { get; } = new();
}

/// <summary>
/// A deliberately small NBD client that puts exactly the bytes a test wants on the wire: it can
/// speak the protocol correctly (fixed newstyle, NBD_OPT_GO, pipelined requests) or break it at
/// any point. The real clients (libnbd, qemu) never send malformed requests, hence this.
/// </summary>
internal sealed class RawNbdClient : IAsyncDisposable
{
    public const ulong InitMagic = 0x4e42444d41474943;
    public const ulong OptionMagic = 0x49484156454F5054;
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const uint OptExportName = 1, OptAbort = 2, OptList = 3, OptInfo = 6, OptGo = 7, OptStructuredReply = 8, OptSetMetaContext = 10;
    public const uint RepAck = 1, RepServer = 2, RepInfo = 3, RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000001, RepErrInvalid = 0x80000003, RepErrUnknown = 0x80000006;
    public const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2, CmdFlush = 3, CmdTrim = 4, CmdCache = 5, CmdWriteZeroes = 6, CmdBlockStatus = 7;
    public const ushort FlagFua = 1, FlagDf = 4, FlagReqOne = 8;
    public const ushort TxReadOnly = 1 << 1;
    public const uint EPERM = 1, EIO = 5, EINVAL = 22, ENOSPC = 28;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    // Read lengths by cookie: a simple reply does not say how much data follows it.
    private readonly Dictionary<ulong, uint> _reads = new();

    private RawNbdClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public ulong Size { get; private set; }
    public ushort TransmissionFlags { get; private set; }
    public bool Structured { get; private set; }

    public static async Task<RawNbdClient> ConnectUnixAsync(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new UnixDomainSocketEndPoint(path));
        return new RawNbdClient(s);
    }

    /// <summary>Reads the server's greeting and checks its magics; returns the handshake flags.</summary>
    public async Task<ushort> ReadGreetingAsync()
    {
        var b = await ReadExactlyAsync(18);
        if (BinaryPrimitives.ReadUInt64BigEndian(b) != InitMagic || BinaryPrimitives.ReadUInt64BigEndian(b.AsSpan(8)) != OptionMagic)
            throw new InvalidDataException("bad greeting");
        return BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(16));
    }

    public Task SendClientFlagsAsync(uint flags)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, flags);
        return SendAsync(b);
    }

    /// <summary>An option header (magic, option, length) followed by <paramref name="data"/>.</summary>
    public static byte[] Option(uint option, ReadOnlySpan<byte> data, ulong magic = OptionMagic, uint? length = null)
    {
        var b = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(b, magic);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), length ?? (uint)data.Length);
        data.CopyTo(b.AsSpan(16));
        return b;
    }

    /// <summary>The data of NBD_OPT_GO / NBD_OPT_INFO: name length, name, count of info requests, requests.</summary>
    public static byte[] GoData(string name, params ushort[] infos)
    {
        byte[] n = Encoding.UTF8.GetBytes(name);
        var b = new byte[4 + n.Length + 2 + 2 * infos.Length];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)n.Length);
        n.CopyTo(b, 4);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4 + n.Length), (ushort)infos.Length);
        for (int i = 0; i < infos.Length; i++) BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6 + n.Length + 2 * i), infos[i]);
        return b;
    }

    public Task SendOptionAsync(uint option, ReadOnlySpan<byte> data) => SendAsync(Option(option, data));

    public async Task<(uint Option, uint Type, byte[] Payload)> ReadOptionReplyAsync()
    {
        var h = await ReadExactlyAsync(20);
        if (BinaryPrimitives.ReadUInt64BigEndian(h) != OptionReplyMagic) throw new InvalidDataException("bad option reply magic");
        uint len = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        if (len > 1 << 20) throw new InvalidDataException($"option reply of {len} bytes");
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)), await ReadExactlyAsync((int)len));
    }

    /// <summary>Reads option replies up to the final one (an ACK or an error); returns them all.</summary>
    public async Task<List<(uint Option, uint Type, byte[] Payload)>> ReadOptionRepliesAsync()
    {
        var all = new List<(uint, uint, byte[])>();
        while (true)
        {
            var r = await ReadOptionReplyAsync();
            all.Add(r);
            if (r.Type is not (RepServer or RepInfo or RepMetaContext)) return all;
        }
    }

    /// <summary>A well-behaved fixed-newstyle handshake ending in NBD_OPT_GO; throws if the export is refused.</summary>
    public async Task GoAsync(string export, bool structured = true, bool blockStatus = false)
    {
        await ReadGreetingAsync();
        await SendClientFlagsAsync(3);
        if (structured)
        {
            await SendOptionAsync(OptStructuredReply, []);
            var sr = await ReadOptionReplyAsync();
            if (sr.Type != RepAck) throw new InvalidDataException($"structured replies refused: 0x{sr.Type:x}");
            Structured = true;
        }
        if (blockStatus)
        {
            await SendOptionAsync(OptSetMetaContext, MetaContextData(export, "base:allocation"));
            var replies = await ReadOptionRepliesAsync();
            if (replies.Count != 2 || replies[0].Type != RepMetaContext) throw new InvalidDataException("base:allocation refused");
        }
        await SendOptionAsync(OptGo, GoData(export));
        foreach (var (_, type, payload) in await ReadOptionRepliesAsync())
        {
            if (type == RepInfo && BinaryPrimitives.ReadUInt16BigEndian(payload) == 0)
            {
                Size = BinaryPrimitives.ReadUInt64BigEndian(payload.AsSpan(2));
                TransmissionFlags = BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(10));
            }
            else if (type != RepInfo && type != RepAck)
                throw new InvalidDataException($"NBD_OPT_GO '{export}' refused: 0x{type:x} {Encoding.UTF8.GetString(payload)}");
        }
    }

    /// <summary>The data of NBD_OPT_SET_META_CONTEXT: export name, then the queries.</summary>
    public static byte[] MetaContextData(string export, params string[] queries)
    {
        var m = new MemoryStream();
        var n = new byte[4];
        void Str(string s)
        {
            byte[] b = Encoding.UTF8.GetBytes(s);
            BinaryPrimitives.WriteUInt32BigEndian(n, (uint)b.Length);
            m.Write(n);
            m.Write(b);
        }
        Str(export);
        BinaryPrimitives.WriteUInt32BigEndian(n, (uint)queries.Length);
        m.Write(n);
        foreach (var q in queries) Str(q);
        return m.ToArray();
    }

    public static byte[] Request(ushort flags, ushort type, ulong cookie, ulong offset, uint length, uint magic = RequestMagic)
    {
        var b = new byte[28];
        BinaryPrimitives.WriteUInt32BigEndian(b, magic);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), cookie);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(24), length);
        return b;
    }

    /// <summary>Sends a request (and a write's payload) without waiting for its reply.</summary>
    public async Task SendRequestAsync(ushort type, ulong cookie, ulong offset, uint length, ReadOnlyMemory<byte> payload = default, ushort flags = 0)
    {
        if (type == CmdRead) _reads[cookie] = length;
        await SendAsync(Request(flags, type, cookie, offset, length));
        if (!payload.IsEmpty) await _stream.WriteAsync(payload);
    }

    /// <summary>Reads one complete reply: a simple reply, or structured chunks up to the one flagged done.</summary>
    public async Task<NbdReply> ReadReplyAsync()
    {
        var magic = await ReadExactlyAsync(4);
        uint m = BinaryPrimitives.ReadUInt32BigEndian(magic);
        if (m == SimpleReplyMagic)
        {
            var h = await ReadExactlyAsync(12);
            uint error = BinaryPrimitives.ReadUInt32BigEndian(h);
            ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(4));
            byte[] data = [];
            if (_reads.Remove(cookie, out uint len) && error == 0) data = await ReadExactlyAsync((int)len);
            return new NbdReply(cookie, error, data, "");
        }
        if (m != StructuredReplyMagic) throw new InvalidDataException($"bad reply magic 0x{m:x8}");
        byte[]? buffer = null;
        uint err = 0;
        string message = "";
        var extents = new List<(uint, uint)>();
        while (true)
        {
            var h = await ReadExactlyAsync(16);
            ushort flags = BinaryPrimitives.ReadUInt16BigEndian(h);
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(2));
            ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(4));
            uint len = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12));
            var payload = await ReadExactlyAsync((int)len);
            if (type == 1) // OFFSET_DATA: offset, then data
            {
                _reads.TryGetValue(cookie, out uint total);
                buffer ??= new byte[total];
                payload.AsSpan(8).CopyTo(buffer.AsSpan(0)); // this server sends one chunk per read, at the request's offset
            }
            else if (type == 5) // BLOCK_STATUS: context id, then (length, flags) pairs
                for (int i = 4; i + 8 <= payload.Length; i += 8)
                    extents.Add((BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(i)), BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(i + 4))));
            else if (type >= 0x8000)
            {
                err = BinaryPrimitives.ReadUInt32BigEndian(payload);
                int ml = BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(4));
                message = Encoding.UTF8.GetString(payload, 6, ml);
            }
            if ((flags & 1) != 0)
            {
                _reads.Remove(cookie);
                var reply = new NbdReply(cookie, err, buffer ?? [], message);
                reply.Extents.AddRange(extents);
                return reply;
            }
            // More chunks follow: read them with the same magic first.
            uint next = BinaryPrimitives.ReadUInt32BigEndian(await ReadExactlyAsync(4));
            if (next != StructuredReplyMagic) throw new InvalidDataException($"bad chunk magic 0x{next:x8}");
        }
    }

    /// <summary>One request and its reply (nothing else may be in flight).</summary>
    public async Task<NbdReply> CallAsync(ushort type, ulong offset, uint length, ReadOnlyMemory<byte> payload = default, ushort flags = 0)
    {
        ulong cookie = (ulong)Random.Shared.NextInt64();
        await SendRequestAsync(type, cookie, offset, length, payload, flags);
        var r = await ReadReplyAsync();
        if (r.Cookie != cookie) throw new InvalidDataException($"reply to cookie {r.Cookie}, expected {cookie}");
        return r;
    }

    public async Task DisconnectAsync()
    {
        await SendAsync(Request(0, CmdDisc, 0, 0, 0));
        _socket.Shutdown(SocketShutdown.Send);
    }

    public async Task SendAsync(ReadOnlyMemory<byte> bytes) => await _stream.WriteAsync(bytes);

    public async Task<byte[]> ReadExactlyAsync(int n)
    {
        var b = new byte[n];
        await _stream.ReadExactlyAsync(b);
        return b;
    }

    /// <summary>True if the server closed the connection (reads end) within <paramref name="timeout"/>.</summary>
    public async Task<bool> ClosedByServerAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var b = new byte[4096];
        try
        {
            while (true)
                if (await _stream.ReadAsync(b, cts.Token) == 0) return true;
        }
        catch (OperationCanceledException) { return false; }
        catch (IOException) { return true; }
    }

    /// <summary>Closes the socket at once, whatever is half sent: a client that vanishes.</summary>
    public void Abort()
    {
        _socket.LingerState = new LingerOption(true, 0);
        _socket.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        _stream.Dispose();
        return ValueTask.CompletedTask;
    }
}
