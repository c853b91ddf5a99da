using System.Buffers.Binary;
using System.Text;
using Cowfish.Format;

namespace Cowfish.Streams;

/// <summary>
/// The state of a receive that has not finished, kept in the pool so that it survives an interrupted
/// input, a crash or a power cut: what is being received, into which hidden volume tree, and how far
/// (the next record, the logical offset and the CRC32C of the stream so far). It is written in the
/// same transaction as the changes it accounts for, so the two always agree. It lives in the plain
/// tree named <see cref="TreeName"/>, under the key "state"; the partial volume tree is not in the
/// volume directory, so no volume listing shows it.
/// </summary>
internal sealed record ReceiveState(
    bool Incremental,
    Guid Snapshot,
    Guid Parent,
    Guid ParentVolume,
    TreeId Partial,
    long CreatedNs,
    string Name,
    ulong NextSequence,
    long Offset,
    uint Crc)
{
    public const string TreeName = "receive.state";
    public static readonly byte[] Key = "state"u8.ToArray();
    private const uint Layout1 = 1;

    public byte[] Encode()
    {
        var name = Encoding.UTF8.GetBytes(Name);
        var v = new byte[104 + name.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(v, Layout1);
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(4), Incremental ? 1u : 0u);
        Snapshot.TryWriteBytes(v.AsSpan(8, 16));
        Parent.TryWriteBytes(v.AsSpan(24, 16));
        ParentVolume.TryWriteBytes(v.AsSpan(40, 16));
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(56), Partial.Value);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(64), CreatedNs);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(72), NextSequence);
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(80), Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(88), Crc);
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(92), 0);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(96), (ulong)name.Length);
        name.CopyTo(v, 104);
        return v;
    }

    public static ReceiveState Decode(byte[] v)
    {
        if (v.Length < 104 || BinaryPrimitives.ReadUInt32LittleEndian(v) != Layout1
            || BinaryPrimitives.ReadUInt64LittleEndian(v.AsSpan(96)) != (ulong)(v.Length - 104))
            throw new CorruptionException(0, "receive state record", "layout 1 of 104 bytes and a name", $"{v.Length} bytes");
        return new ReceiveState(
            (BinaryPrimitives.ReadUInt32LittleEndian(v.AsSpan(4)) & 1) != 0,
            new Guid(v.AsSpan(8, 16)), new Guid(v.AsSpan(24, 16)), new Guid(v.AsSpan(40, 16)),
            new TreeId(BinaryPrimitives.ReadUInt64LittleEndian(v.AsSpan(56))),
            BinaryPrimitives.ReadInt64LittleEndian(v.AsSpan(64)),
            Encoding.UTF8.GetString(v, 104, v.Length - 104),
            BinaryPrimitives.ReadUInt64LittleEndian(v.AsSpan(72)),
            BinaryPrimitives.ReadInt64LittleEndian(v.AsSpan(80)),
            BinaryPrimitives.ReadUInt32LittleEndian(v.AsSpan(88)));
    }

    public ResumePoint Point => new(NextSequence, Offset, Crc);

    /// <summary>The text a sender needs to go on: <c>cowfish-resume-1:</c> and base64url of snapshot, parent, point and a CRC of those.</summary>
    public string Token()
    {
        var b = new byte[60];
        Snapshot.TryWriteBytes(b.AsSpan(0, 16));
        Parent.TryWriteBytes(b.AsSpan(16, 16));
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), NextSequence);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(40), Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(48), Crc);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(52), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(56), Crc32C.Compute(b.AsSpan(0, 56)));
        return TokenPrefix + Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    public const string TokenPrefix = "cowfish-resume-1:";

    /// <summary>Parses a resume token; throws <see cref="InvalidRequestException"/> if it is malformed or mistyped.</summary>
    public static (Guid Snapshot, Guid Parent, ResumePoint Point) ParseToken(string token)
    {
        if (!token.StartsWith(TokenPrefix, StringComparison.Ordinal)) throw new InvalidRequestException($"not a resume token (expected {TokenPrefix}...)");
        string s = token[TokenPrefix.Length..].Trim().Replace('-', '+').Replace('_', '/');
        s = s.PadRight((s.Length + 3) / 4 * 4, '=');
        byte[] b;
        try { b = Convert.FromBase64String(s); }
        catch (FormatException) { throw new InvalidRequestException("the resume token is not valid base64url"); }
        if (b.Length != 60 || BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(56)) != Crc32C.Compute(b.AsSpan(0, 56)))
            throw new InvalidRequestException("the resume token is damaged (length or checksum)");
        var point = new ResumePoint(BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(32)), BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(40)),
            BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(48)));
        if (point.Sequence == 0 || point.Offset < StreamFormat.HeaderSize) throw new InvalidRequestException("the resume token points before the first record");
        return (new Guid(b.AsSpan(0, 16)), new Guid(b.AsSpan(16, 16)), point);
    }
}
