using System.Buffers;
using System.Buffers.Binary;
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

    public void Execute()
    {
        var c = Connection;
        var handle = c.Export!.Handle;
        bool fua = (Flags & CmdFlagFua) != 0;
        try
        {
            switch (Type)
            {
                case CmdRead:
                {
                    var data = Buffer.AsSpan(ReadHeaderRoom, (int)Length);
                    int n = handle.Read((long)Offset, data);
                    // A file shrunk under its export reads as zeros past its end.
                    if (n < data.Length) data[n..].Clear();
                    c.SendRead(this);
                    break;
                }
                case CmdWrite:
                    handle.Write((long)Offset, Buffer.AsSpan(0, (int)Length), durable: fua);
                    c.SendOk(this);
                    break;
                case CmdFlush:
                    handle.Flush();
                    c.SendOk(this);
                    break;
                case CmdTrim:
                    handle.PunchHole((long)Offset, Length, durable: fua);
                    c.SendOk(this);
                    break;
                case CmdWriteZeroes:
                    handle.WriteZeroes((long)Offset, Length, allocate: (Flags & CmdFlagNoHole) != 0, durable: fua);
                    c.SendOk(this);
                    break;
                case CmdCache:
                    c.SendOk(this);
                    break;
                case CmdBlockStatus:
                    Complete = handle.Allocation((long)Offset, Length, Segments,
                        (Flags & CmdFlagReqOne) != 0 ? 1 : NbdConnection.MaxDescriptors);
                    c.SendBlockStatus(this);
                    break;
                default:
                    throw new InvalidOperationException($"unvalidated command {Type}");
            }
        }
        catch (Exception e)
        {
            var (error, message) = Classify(e);
            c.Server.Log($"{c.Peer}: {CommandName(Type)} at {Offset}+{Length} failed: {message} ({ErrorName(error)})");
            c.SendError(this, error, message);
        }
        finally
        {
            c.Complete(this);
        }
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
