using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Cowfish.Files;
using static Cowfish.Nbd.NbdProtocol;

namespace Cowfish.Nbd;

/// <summary>
/// One request in flight. A connection keeps a pool of these and reuses them, so a request costs
/// no allocation of its own; payload buffers come from the shared array pool. The connection's
/// reader has validated every field before a request reaches <see cref="Execute"/>.
/// </summary>
internal sealed class NbdRequest(NbdConnection connection)
{
    public readonly NbdConnection Connection = connection;
    public ushort Flags;
    public ushort Type;
    public ulong Cookie;
    public ulong Offset;
    public uint Length;

    /// <summary>When the reader read the header off the socket, and when it handed the request to the workers (Stopwatch timestamps).</summary>
    public long Received, Enqueued;

    /// <summary>
    /// For a write, the payload at [0, Length); for a read, room for the reply header
    /// (<see cref="ReadHeaderRoom"/> bytes) followed by the data.
    /// </summary>
    public byte[]? Buffer;

    /// <summary>Room before read data for a structured chunk header and its offset field.</summary>
    public const int ReadHeaderRoom = StructuredHeaderSize + 8;

    /// <summary>Scratch for reply headers and block-status descriptors.</summary>
    public readonly byte[] Scratch = new byte[64];

    public readonly List<AllocationSegment> Segments = new();

    /// <summary>Whether <see cref="Segments"/> reach the end of the request or of the file.</summary>
    public bool Complete;

    public long Charge => ChargeOf(Type, Length);

    /// <summary>What a request counts against its connection's in-flight byte budget: its payload buffer.</summary>
    public static long ChargeOf(ushort type, uint length) => length + (type is CmdRead or CmdWrite ? ReadHeaderRoom : 0);

    public void RentBuffer(int bytes) => Buffer = ArrayPool<byte>.Shared.Rent(bytes);

    public void ReturnBuffer()
    {
        if (Buffer is null) return;
        ArrayPool<byte>.Shared.Return(Buffer);
        Buffer = null;
    }

    /// <summary>
    /// Runs the request on the calling worker and sends its reply; then counts it, logs it if it was
    /// slow, and gives it back to its connection. With a slow-request log, <paramref name="phases"/>
    /// records where its time went: the engine marks its own phases on this thread.
    /// </summary>
    public void Execute(PhaseRecorder phases)
    {
        var c = Connection;
        var server = c.Server;
        bool recording = server.SlowLogTicks >= 0;
        if (recording)
        {
            long now = phases.Start();
            phases.Add(Phase.Recv, Enqueued - Received);
            phases.Add(Phase.Queued, now - Enqueued);
        }
        server.Baseline.Starting();
        bool failed = false;
        try
        {
            Run(c.Export!.Handle);
            PhaseRecorder.Mark(Phase.Reply);
            switch (Type)
            {
                case CmdRead: c.SendRead(this); break;
                case CmdBlockStatus: c.SendBlockStatus(this); break;
                default: c.SendOk(this); break;
            }
        }
        catch (Exception e)
        {
            failed = true;
            var (error, message) = Classify(e);
            server.Log($"{c.Peer}: {CommandName(Type)} at {Offset}+{Length} failed: {message} ({ErrorName(error)})");
            PhaseRecorder.Mark(Phase.Reply);
            c.SendError(this, error, message);
        }
        finally
        {
            long done = recording ? phases.Stop() : Stopwatch.GetTimestamp();
            server.Baseline.Answered();
            NbdMetrics.Answered(Type, Length, failed, Received, done);
            if (recording && done - Received > server.SlowLogTicks) server.Log(SlowLine(phases, done));
            c.Complete(this);
        }
    }

    /// <summary>The engine's part of the request: everything but the reply.</summary>
    private void Run(FileHandle handle)
    {
        bool fua = (Flags & CmdFlagFua) != 0;
        switch (Type)
        {
            case CmdRead:
            {
                using var phase = PhaseRecorder.Enter(Phase.Read);
                var data = Buffer.AsSpan(ReadHeaderRoom, (int)Length);
                int n = handle.Read((long)Offset, data);
                // A file shrunk under its export reads as zeros past its end.
                if (n < data.Length) data[n..].Clear();
                break;
            }
            case CmdWrite:
                handle.Write((long)Offset, Buffer.AsSpan(0, (int)Length), durable: fua);
                break;
            case CmdFlush:
                handle.Flush();
                break;
            case CmdTrim:
                handle.PunchHole((long)Offset, Length, durable: fua);
                break;
            case CmdWriteZeroes:
                handle.WriteZeroes((long)Offset, Length, allocate: (Flags & CmdFlagNoHole) != 0, durable: fua);
                break;
            case CmdCache:
                break;
            case CmdBlockStatus:
            {
                using var phase = PhaseRecorder.Enter(Phase.Read);
                Complete = handle.Allocation((long)Offset, Length, Segments,
                    (Flags & CmdFlagReqOne) != 0 ? 1 : NbdConnection.MaxDescriptors);
                break;
            }
            default:
                throw new InvalidOperationException($"unvalidated command {Type}");
        }
    }

    /// <summary>The phases in the order a request lives through them; <see cref="Phase.Other"/> last.</summary>
    private static readonly Phase[] LogOrder =
        [Phase.Recv, Phase.Queued, Phase.Lock, Phase.Read, Phase.Cow, Phase.Map, Phase.Commit, Phase.Flush, Phase.Reply, Phase.Other];

    /// <summary>
    /// One slow-log line (docs/nbd.md): <c>slow WRITE at 4096+512 of vm/disk.img: 12.345 ms (recv 0.004, queued 0.010, ...)</c>.
    /// Built only for a request that was slow, so the strings cost nothing on the fast path.
    /// </summary>
    private string SlowLine(PhaseRecorder phases, long done)
    {
        var b = new System.Text.StringBuilder(256);
        b.Append(Connection.Peer).Append(": slow ").Append(CommandName(Type));
        if ((Flags & CmdFlagFua) != 0) b.Append("+FUA");
        b.Append(" at ").Append(Offset).Append('+').Append(Length).Append(" of ").Append(Connection.Export!.Name).Append(": ");
        b.Append(Ms(done - Received)).Append(" ms (");
        for (int i = 0; i < LogOrder.Length; i++)
        {
            if (i > 0) b.Append(", ");
            b.Append(LogOrder[i].ToString().ToLowerInvariant()).Append(' ').Append(Ms(phases[LogOrder[i]]));
        }
        return b.Append(')').ToString();

        static string Ms(long ticks) => (ticks * 1000.0 / Stopwatch.Frequency).ToString("F3");
    }

    private static (uint Error, string Message) Classify(Exception e) => e switch
    {
        ReadOnlyVolumeException => (EPERM, e.Message),
        InvalidRequestException => (EINVAL, e.Message),
        NotFoundException => (EIO, e.Message),
        CowfishException => (EIO, e.Message.ReplaceLineEndings(" ")),
        IOException => (EIO, e.Message.ReplaceLineEndings(" ")),
        _ => (EIO, $"internal error: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}"),
    };

    /// <summary>The base:allocation status flags of a kind of storage.</summary>
    public static uint StatusOf(AllocationKind kind) => kind switch
    {
        AllocationKind.Data => 0,
        AllocationKind.Unwritten => StateZero,
        _ => StateHole | StateZero,
    };

    public static void WriteStructuredHeader(Span<byte> b, ushort flags, ushort type, ulong cookie, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(b, StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(b[4..], flags);
        BinaryPrimitives.WriteUInt16BigEndian(b[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(b[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(b[16..], length);
    }
}
