using System.Buffers.Binary;
using System.Text;
using static Cowfish.Nbd.NbdProtocol;

namespace Cowfish.Nbd;

/// <summary>The handshake: fixed newstyle option haggling, until the client picks an export or leaves.</summary>
internal sealed partial class NbdConnection
{
    private bool _noZeroes;
    private bool _structured;
    // The base:allocation context was selected by SET_META_CONTEXT for this export name.
    private string? _metaExport;

    /// <summary>Runs option haggling; returns true when an export is chosen and transmission may start.</summary>
    private bool Handshake()
    {
        Span<byte> hello = stackalloc byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(hello, InitMagic);
        BinaryPrimitives.WriteUInt64BigEndian(hello[8..], OptionMagic);
        BinaryPrimitives.WriteUInt16BigEndian(hello[16..], FlagFixedNewstyle | FlagNoZeroes);
        SendRaw(hello);

        Span<byte> four = stackalloc byte[4];
        if (!ReadFully(four, "client flags")) return false;
        uint clientFlags = BinaryPrimitives.ReadUInt32BigEndian(four);
        if ((clientFlags & ~(ClientFixedNewstyle | ClientNoZeroes)) != 0)
        {
            Server.Log($"{Peer}: unknown client flags 0x{clientFlags:x}; disconnecting");
            return false;
        }
        _noZeroes = (clientFlags & ClientNoZeroes) != 0;

        Span<byte> header = stackalloc byte[16];
        while (true)
        {
            if (!ReadFully(header, "option header")) return false;
            ulong magic = BinaryPrimitives.ReadUInt64BigEndian(header);
            uint option = BinaryPrimitives.ReadUInt32BigEndian(header[8..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(header[12..]);
            if (magic != OptionMagic)
            {
                Server.Log($"{Peer}: bad option magic 0x{magic:x16}; disconnecting");
                return false;
            }
            if (length > MaxOptionLength)
            {
                Server.Log($"{Peer}: option {option} of {length} bytes is over the {MaxOptionLength}-byte limit; disconnecting");
                return false;
            }
            var data = new byte[length];
            if (!ReadFully(data, $"option {option} data")) return false;
            if (Server.Stopping && option != OptAbort)
            {
                OptionReply(option, RepErrShutdown, "server is shutting down");
                continue;
            }
            switch (option)
            {
                case OptExportName:
                {
                    string name = Encoding.UTF8.GetString(data);
                    var export = Server.Exports.TryOpen(name, out string reason);
                    if (export is null)
                    {
                        // NBD_OPT_EXPORT_NAME cannot answer with an error: the session ends.
                        Server.Log($"{Peer}: export '{name}' refused: {reason}; disconnecting");
                        return false;
                    }
                    Choose(export);
                    Span<byte> reply = stackalloc byte[10 + 124];
                    reply.Clear();
                    BinaryPrimitives.WriteUInt64BigEndian(reply, export.Size);
                    BinaryPrimitives.WriteUInt16BigEndian(reply[8..], TransmissionFlags(export));
                    SendRaw(_noZeroes ? reply[..10] : reply);
                    return true;
                }
                case OptAbort:
                    OptionReply(option, RepAck);
                    return false;
                case OptList:
                    if (length != 0)
                    {
                        OptionReply(option, RepErrInvalid, "NBD_OPT_LIST takes no data");
                        break;
                    }
                    foreach (var (name, description) in Server.Exports.List())
                    {
                        byte[] n = Encoding.UTF8.GetBytes(name), d = Encoding.UTF8.GetBytes(description);
                        var payload = new byte[4 + n.Length + d.Length];
                        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)n.Length);
                        n.CopyTo(payload, 4);
                        d.CopyTo(payload, 4 + n.Length);
                        OptionReply(option, RepServer, payload);
                    }
                    OptionReply(option, RepAck);
                    break;
                case OptInfo:
                case OptGo:
                    if (InfoOrGo(option, data)) return true;
                    break;
                case OptStructuredReply:
                    if (length != 0) OptionReply(option, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
                    else
                    {
                        _structured = true;
                        OptionReply(option, RepAck);
                    }
                    break;
                case OptListMetaContext:
                case OptSetMetaContext:
                    MetaContext(option, data);
                    break;
                default:
                    // NBD_OPT_STARTTLS, NBD_OPT_EXTENDED_HEADERS and anything newer: not spoken here.
                    Server.Log($"{Peer}: option {option} is not supported (NBD_REP_ERR_UNSUP)");
                    OptionReply(option, RepErrUnsup, $"option {option} is not supported");
                    break;
            }
        }
    }

    /// <summary>NBD_OPT_INFO and NBD_OPT_GO; returns true when GO succeeded.</summary>
    private bool InfoOrGo(uint option, byte[] data)
    {
        var r = new OptionReader(data);
        if (!r.TryString(out string name) || !r.TryUInt16(out ushort count) || r.Remaining != count * 2)
        {
            Server.Log($"{Peer}: malformed {(option == OptGo ? "NBD_OPT_GO" : "NBD_OPT_INFO")} of {data.Length} bytes");
            OptionReply(option, RepErrInvalid, "malformed request: lengths do not add up");
            return false;
        }
        var wanted = new HashSet<ushort>();
        for (int i = 0; i < count; i++)
        {
            r.TryUInt16(out ushort info);
            wanted.Add(info);
        }
        var export = Server.Exports.TryOpen(name, out string reason);
        if (export is null)
        {
            Server.Log($"{Peer}: export '{name}' refused: {reason}");
            OptionReply(option, RepErrUnknown, reason);
            return false;
        }

        var info0 = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(info0, InfoExport);
        BinaryPrimitives.WriteUInt64BigEndian(info0.AsSpan(2), export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info0.AsSpan(10), TransmissionFlags(export));
        OptionReply(option, RepInfo, info0);
        if (wanted.Contains(InfoName)) OptionReply(option, RepInfo, InfoString(InfoName, export.Name));
        if (wanted.Contains(InfoDescription)) OptionReply(option, RepInfo, InfoString(InfoDescription, export.Description));
        // Always sent: byte-granular requests work (minimum 1), 4 KiB is the block size.
        var sizes = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(sizes, InfoBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(2), 1);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(6), 4096);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(10), (uint)Server.Options.MaxPayload);
        OptionReply(option, RepInfo, sizes);
        OptionReply(option, RepAck);
        if (option == OptInfo) return false;
        Choose(export);
        return true;
    }

    private static byte[] InfoString(ushort type, string s)
    {
        byte[] text = Encoding.UTF8.GetBytes(s);
        var b = new byte[2 + text.Length];
        BinaryPrimitives.WriteUInt16BigEndian(b, type);
        text.CopyTo(b, 2);
        return b;
    }

    /// <summary>NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: this server knows base:allocation only.</summary>
    private void MetaContext(uint option, byte[] data)
    {
        bool set = option == OptSetMetaContext;
        if (!_structured)
        {
            OptionReply(option, RepErrInvalid, "negotiate structured replies first");
            return;
        }
        var r = new OptionReader(data);
        var queries = new List<string>();
        uint count = 0;
        bool ok = r.TryString(out string name) && r.TryUInt32(out count) && count <= 1024;
        for (uint i = 0; ok && i < count; i++)
        {
            ok = r.TryString(out string q);
            queries.Add(q);
        }
        if (!ok || r.Remaining != 0)
        {
            Server.Log($"{Peer}: malformed meta-context option of {data.Length} bytes");
            OptionReply(option, RepErrInvalid, "malformed request: lengths do not add up");
            return;
        }
        var export = Server.Exports.TryOpen(name, out string reason);
        if (export is null)
        {
            OptionReply(option, RepErrUnknown, reason);
            return;
        }
        if (set) _metaExport = null;
        // LIST with no queries lists everything; "base:" names every base context.
        bool match = (!set && queries.Count == 0) || queries.Any(q => q == BaseAllocation || (!set && q == "base:"));
        if (match)
        {
            byte[] text = Encoding.UTF8.GetBytes(BaseAllocation);
            var payload = new byte[4 + text.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, set ? BaseAllocationId : 0);
            text.CopyTo(payload, 4);
            OptionReply(option, RepMetaContext, payload);
            if (set) _metaExport = export.Name;
        }
        OptionReply(option, RepAck);
    }

    private void Choose(NbdExport export)
    {
        Export = export;
        BlockStatus = _structured && _metaExport == export.Name;
        Server.Log($"{Peer}: serving {export.Name} ({export.Size} bytes{(export.ReadOnly ? ", read-only" : "")}{(Structured ? ", structured replies" : "")}{(BlockStatus ? ", base:allocation" : "")})");
    }

    private ushort TransmissionFlags(NbdExport export)
    {
        ushort f = TxHasFlags | TxSendFlush | TxSendFua | TxCanMultiConn | TxSendCache;
        if (export.ReadOnly) f |= TxReadOnly;
        else f |= TxSendTrim | TxSendWriteZeroes | TxSendFastZero;
        if (_structured) f |= TxSendDf;
        return f;
    }

    private void OptionReply(uint option, uint type, string message) => OptionReply(option, type, Encoding.UTF8.GetBytes(message));

    private void OptionReply(uint option, uint type, ReadOnlySpan<byte> payload = default)
    {
        var b = new byte[20 + payload.Length];
        BinaryPrimitives.WriteUInt64BigEndian(b, OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), type);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(16), (uint)payload.Length);
        payload.CopyTo(b.AsSpan(20));
        SendRaw(b);
    }

    /// <summary>Reads the fields of an option's data, checking every length against what is left.</summary>
    private ref struct OptionReader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _at;

        public readonly int Remaining => _data.Length - _at;

        public bool TryUInt16(out ushort v)
        {
            v = 0;
            if (Remaining < 2) return false;
            v = BinaryPrimitives.ReadUInt16BigEndian(_data[_at..]);
            _at += 2;
            return true;
        }

        public bool TryUInt32(out uint v)
        {
            v = 0;
            if (Remaining < 4) return false;
            v = BinaryPrimitives.ReadUInt32BigEndian(_data[_at..]);
            _at += 4;
            return true;
        }

        /// <summary>A 32-bit length and that many bytes of UTF-8, at most the protocol's 4096.</summary>
        public bool TryString(out string s)
        {
            s = "";
            if (!TryUInt32(out uint n) || n > MaxString || n > Remaining) return false;
            s = Encoding.UTF8.GetString(_data.Slice(_at, (int)n));
            _at += (int)n;
            return true;
        }
    }
}
