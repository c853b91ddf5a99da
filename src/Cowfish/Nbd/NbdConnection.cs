using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using static Cowfish.Nbd.NbdProtocol;

namespace Cowfish.Nbd;

/// <summary>
/// One client connection. Its reader thread runs the handshake, then reads requests, validates
/// every field at the edge (nbdkit's habit: reject with the error the spec prescribes, log one line)
/// and hands each valid request to the shared workers. Replies go out in completion order, so many
/// requests are in flight at once and answered out of order. Replies are written under
/// <see cref="_sendGate"/>, so the chunks of one reply are never interleaved with another's.
/// </summary>
internal sealed partial class NbdConnection
{
    private readonly Stream _in;
    private readonly Stream _out;
    private readonly Socket? _socket;

    // Guards writes to _out, and _dead.
    private readonly object _sendGate = new();
    private bool _dead;

    // Guards _free, _inFlight and _inFlightBytes; the reader waits on it for room, Drain for zero.
    private readonly object _flightGate = new();
    private readonly Stack<NbdRequest> _free = new();
    private int _inFlight;
    private long _inFlightBytes;

    public NbdConnection(NbdServer server, Stream input, Stream output, Socket? socket, string peer)
    {
        Server = server;
        _in = new BufferedStream(input, 64 * 1024);
        _out = output;
        _socket = socket;
        Peer = peer;
    }

    public NbdServer Server { get; }
    public string Peer { get; }
    public NbdExport? Export { get; private set; }
    public bool Structured => _structured;
    public bool BlockStatus { get; private set; }

    /// <summary>Runs the connection to its end; never throws.</summary>
    public void Run()
    {
        try
        {
            // A client gets 30 s for the handshake; one that connects and says nothing must not
            // hold a thread for ever. Transmission may idle as long as it likes.
            if (_socket is not null) _socket.ReceiveTimeout = 30_000;
            if (!Handshake()) return;
            if (_socket is not null) _socket.ReceiveTimeout = 0;
            Transmit();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
        {
            // The client went away; the reader reported it where it mattered.
        }
        catch (Exception e)
        {
            Server.Log($"{Peer}: connection failed: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
        }
        finally
        {
            Drain();
            Close();
        }
    }

    /// <summary>Wakes the reader of a socket connection (shutdown); requests in flight still complete.</summary>
    public void StopReading()
    {
        try { _socket?.Shutdown(SocketShutdown.Receive); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    private void Close()
    {
        lock (_sendGate) _dead = true;
        try
        {
            _out.Flush();
            _socket?.Dispose();
            _in.Dispose();
            _out.Dispose();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException) { }
    }

    private void Transmit()
    {
        var opts = Server.Options;
        var export = Export!;
        Span<byte> h = stackalloc byte[RequestHeaderSize];
        while (true)
        {
            int got = ReadSome(h);
            if (got == 0)
            {
                if (_inFlight > 0) Server.Log($"{Peer}: client went away with requests in flight");
                else if (!Server.Stopping) Server.Log($"{Peer}: client closed the connection without NBD_CMD_DISC");
                return;
            }
            if (got < h.Length)
            {
                Server.Log($"{Peer}: client went away mid-request ({got} of {h.Length} header bytes)");
                return;
            }
            // A request's latency runs from here to its reply written.
            long received = Stopwatch.GetTimestamp();
            uint magic = BinaryPrimitives.ReadUInt32BigEndian(h);
            ushort flags = BinaryPrimitives.ReadUInt16BigEndian(h[4..]);
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(h[6..]);
            ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(h[8..]);
            ulong offset = BinaryPrimitives.ReadUInt64BigEndian(h[16..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(h[24..]);
            if (magic != RequestMagic)
            {
                Server.Log($"{Peer}: bad request magic 0x{magic:x8}; disconnecting");
                return;
            }
            if (type == CmdDisc)
            {
                Server.Log($"{Peer}: disconnect requested");
                return;
            }

            var (error, why) = Validate(export, flags, type, offset, length);
            if (error != 0)
            {
                // A refused write's payload is still on the wire: skip it to stay in step.
                if (type == CmdWrite && !Skip(length)) return;
                Server.Log($"{Peer}: {CommandName(type)} at {offset}+{length} refused: {why} ({ErrorName(error)})");
                RefuseNow(cookie, error, why);
                continue;
            }
            if (Server.Stopping)
            {
                if (type == CmdWrite && !Skip(length)) return;
                RefuseNow(cookie, ESHUTDOWN, "server is shutting down");
                continue;
            }

            var r = Acquire(type, length);
            r.Flags = flags;
            r.Type = type;
            r.Cookie = cookie;
            r.Offset = offset;
            r.Length = length;
            r.Received = received;
            if (type == CmdRead) r.RentBuffer(NbdRequest.ReadHeaderRoom + (int)length);
            else if (type == CmdWrite)
            {
                r.RentBuffer((int)length);
                int n = ReadSome(r.Buffer.AsSpan(0, (int)length));
                if (n < length)
                {
                    Server.Log($"{Peer}: client went away mid-request (WRITE payload {n} of {length} bytes)");
                    Complete(r);
                    return;
                }
            }
            r.Enqueued = Stopwatch.GetTimestamp();
            Server.Workers.Enqueue(r);
        }
    }

    /// <summary>Checks a request against the spec and the export; returns 0 or the error to answer with.</summary>
    private (uint Error, string Why) Validate(NbdExport export, ushort flags, ushort type, ulong offset, uint length)
    {
        ushort allowed = type switch
        {
            CmdRead => (ushort)(CmdFlagFua | (Structured ? CmdFlagDf : 0)),
            CmdWrite or CmdTrim or CmdFlush or CmdCache => CmdFlagFua,
            CmdWriteZeroes => CmdFlagFua | CmdFlagNoHole | CmdFlagFastZero,
            CmdBlockStatus => CmdFlagFua | CmdFlagReqOne,
            _ => 0,
        };
        if (type > CmdBlockStatus) return (EINVAL, $"unknown command {type}");
        if ((flags & ~allowed) != 0) return (EINVAL, $"flags 0x{flags:x} not valid for {CommandName(type)}");
        if (type == CmdFlush)
            return offset != 0 || length != 0 ? (EINVAL, "FLUSH must have offset and length 0") : (0, "");
        if (length == 0) return (EINVAL, "length 0");
        if (type is CmdRead or CmdWrite && length > Server.Options.MaxPayload)
            return (EINVAL, $"length {length} is over the maximum of {Server.Options.MaxPayload}");
        if (type == CmdBlockStatus && !BlockStatus) return (EINVAL, "no metadata context was negotiated");
        bool writes = type is CmdWrite or CmdTrim or CmdWriteZeroes;
        if (writes && export.ReadOnly) return (EPERM, "export is read-only");
        if (offset > export.Size || length > export.Size - offset)
            return (writes ? ENOSPC : EINVAL, $"past the end of the export ({export.Size} bytes)");
        return (0, "");
    }

    /// <summary>Answers a request the reader refused, before it reaches a worker.</summary>
    private void RefuseNow(ulong cookie, uint error, string message)
    {
        Span<byte> b = stackalloc byte[StructuredHeaderSize + 6 + 200];
        if (Structured) SendRaw(b[..ErrorChunk(b, cookie, error, message)]);
        else
        {
            // A simple error reply carries no data, not even for a read.
            SimpleReply(b, cookie, error);
            SendRaw(b[..16]);
        }
    }

    private static void SimpleReply(Span<byte> b, ulong cookie, uint error)
    {
        BinaryPrimitives.WriteUInt32BigEndian(b, SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(b[4..], error);
        BinaryPrimitives.WriteUInt64BigEndian(b[8..], cookie);
    }

    /// <summary>An NBD_REPLY_TYPE_ERROR chunk with a message trimmed to fit <paramref name="b"/>; returns its size.</summary>
    private static int ErrorChunk(Span<byte> b, ulong cookie, uint error, string message)
    {
        int room = b.Length - StructuredHeaderSize - 6;
        int len = Math.Min(Encoding.UTF8.GetByteCount(message), room);
        var text = b.Slice(StructuredHeaderSize + 6, room);
        len = Encoding.UTF8.GetBytes(message.AsSpan(0, Math.Min(message.Length, len)), text);
        NbdRequest.WriteStructuredHeader(b, ReplyFlagDone, ReplyTypeError, cookie, (uint)(6 + len));
        BinaryPrimitives.WriteUInt32BigEndian(b[StructuredHeaderSize..], error);
        BinaryPrimitives.WriteUInt16BigEndian(b[(StructuredHeaderSize + 4)..], (ushort)len);
        return StructuredHeaderSize + 6 + len;
    }

    // --- replies, called by workers ------------------------------------------------------

    public void SendOk(NbdRequest r)
    {
        SimpleReply(r.Scratch, r.Cookie, 0);
        SendRaw(r.Scratch.AsSpan(0, 16));
    }

    public void SendError(NbdRequest r, uint error, string message)
    {
        Span<byte> b = stackalloc byte[StructuredHeaderSize + 6 + 200];
        if (Structured) SendRaw(b[..ErrorChunk(b, r.Cookie, error, message)]);
        else
        {
            SimpleReply(b, r.Cookie, error);
            SendRaw(b[..16]);
        }
    }

    /// <summary>Sends a read's data, which sits in the request buffer after room for the header.</summary>
    public void SendRead(NbdRequest r)
    {
        var b = r.Buffer!;
        if (Structured)
        {
            NbdRequest.WriteStructuredHeader(b, ReplyFlagDone, ReplyTypeOffsetData, r.Cookie, r.Length + 8);
            BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(StructuredHeaderSize), r.Offset);
            SendRaw(b.AsSpan(0, NbdRequest.ReadHeaderRoom + (int)r.Length));
        }
        else
        {
            int at = NbdRequest.ReadHeaderRoom - 16;
            SimpleReply(b.AsSpan(at), r.Cookie, 0);
            SendRaw(b.AsSpan(at, 16 + (int)r.Length));
        }
    }

    /// <summary>Most descriptors one block-status reply carries (the spec lets a reply cover less than asked).</summary>
    public const int MaxDescriptors = 512;

    /// <summary>One NBD_REPLY_TYPE_BLOCK_STATUS chunk for base:allocation.</summary>
    public void SendBlockStatus(NbdRequest r)
    {
        var segs = r.Segments;
        Span<byte> b = stackalloc byte[StructuredHeaderSize + 4 + (MaxDescriptors + 1) * 8];
        int at = StructuredHeaderSize + 4;
        ulong covered = 0;
        foreach (var s in segs)
        {
            BinaryPrimitives.WriteUInt32BigEndian(b[at..], (uint)s.Length);
            BinaryPrimitives.WriteUInt32BigEndian(b[(at + 4)..], NbdRequest.StatusOf(s.Kind));
            at += 8;
            covered += (ulong)s.Length;
        }
        // Past the end of the file (it shrank after the client chose it, or the range is empty): zeros.
        bool one = (r.Flags & CmdFlagReqOne) != 0;
        if (covered < r.Length && (segs.Count == 0 || (r.Complete && !one)))
        {
            BinaryPrimitives.WriteUInt32BigEndian(b[at..], r.Length - (uint)covered);
            BinaryPrimitives.WriteUInt32BigEndian(b[(at + 4)..], StateHole | StateZero);
            at += 8;
        }
        NbdRequest.WriteStructuredHeader(b, ReplyFlagDone, ReplyTypeBlockStatus, r.Cookie, (uint)(at - StructuredHeaderSize));
        BinaryPrimitives.WriteUInt32BigEndian(b[StructuredHeaderSize..], BaseAllocationId);
        SendRaw(b[..at]);
    }

    private void SendRaw(ReadOnlySpan<byte> bytes)
    {
        lock (_sendGate)
        {
            if (_dead) return;
            try { _out.Write(bytes); }
            catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException or NotSupportedException)
            {
                // The client is gone; the reader will notice too. Replies still owed are dropped.
                _dead = true;
            }
        }
    }

    // --- flow control --------------------------------------------------------------------

    /// <summary>A free request, waiting while the connection is at its in-flight limit.</summary>
    private NbdRequest Acquire(ushort type, uint length)
    {
        long charge = NbdRequest.ChargeOf(type, length);
        lock (_flightGate)
        {
            while (_inFlight > 0 && (_inFlight >= Server.Options.MaxInFlight || _inFlightBytes + charge > Server.Options.MaxInFlightBytes))
                Monitor.Wait(_flightGate);
            _inFlight++;
            _inFlightBytes += charge;
            return _free.Count > 0 ? _free.Pop() : new NbdRequest(this);
        }
    }

    /// <summary>Returns a request to the pool: called by the worker once its reply is sent, or by the reader for a request it abandons.</summary>
    public void Complete(NbdRequest r)
    {
        long charge = r.Charge;
        r.ReturnBuffer();
        lock (_flightGate)
        {
            _inFlight--;
            _inFlightBytes -= charge;
            _free.Push(r);
            Monitor.PulseAll(_flightGate);
        }
    }

    /// <summary>Waits until every request in flight has been answered (or dropped with the client).</summary>
    private void Drain()
    {
        lock (_flightGate)
            while (_inFlight > 0) Monitor.Wait(_flightGate);
    }

    // --- reading -------------------------------------------------------------------------

    /// <summary>Reads until <paramref name="buffer"/> is full or the stream ends; returns the bytes read.</summary>
    private int ReadSome(Span<byte> buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n;
            try { n = _in.Read(buffer[total..]); }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
            {
                _timedOut = (e as SocketException ?? e.InnerException as SocketException)?.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock;
                n = 0;
            }
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    private bool _timedOut;

    private bool ReadFully(Span<byte> buffer, string what)
    {
        int n = ReadSome(buffer);
        if (n == buffer.Length) return true;
        if (_timedOut) Server.Log($"{Peer}: handshake timed out after 30 s ({what}: {n} of {buffer.Length} bytes); disconnecting");
        else if (n > 0 || what != "option header") Server.Log($"{Peer}: client went away during the handshake ({what}: {n} of {buffer.Length} bytes)");
        return false;
    }

    /// <summary>Reads and discards a refused write's payload; false if the client went away.</summary>
    private bool Skip(uint length)
    {
        Span<byte> sink = stackalloc byte[4096];
        long left = length;
        while (left > 0)
        {
            int n = ReadSome(sink[..(int)Math.Min(left, sink.Length)]);
            if (n == 0)
            {
                Server.Log($"{Peer}: client went away mid-request (refused WRITE payload)");
                return false;
            }
            left -= n;
        }
        return true;
    }
}
