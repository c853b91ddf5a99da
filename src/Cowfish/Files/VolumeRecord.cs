using System.Buffers.Binary;
using System.Text;
using Cowfish.Transactions;

namespace Cowfish.Files;

/// <summary>
/// An entry of the volume directory (the pool tree named "volumes"): volume name (UTF-8 key) →
/// tree id u64, flags u8 (bit 0: read-only), 7 reserved bytes, created (ns since the epoch, i64),
/// volume id (16 bytes), origin id (16 bytes, zero if none), origin generation u64. 64 bytes.
/// </summary>
internal sealed record VolumeRecord(string Name, TreeId Tree, bool ReadOnly, long CreatedNs, Guid Id, Guid Origin, ulong OriginGeneration)
{
    public const string DirectoryName = "volumes";
    public const int Size = 64;
    public const int MaxNameBytes = 200;

    public byte[] Encode()
    {
        var v = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(v, Tree.Value);
        v[8] = ReadOnly ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteInt64LittleEndian(v.AsSpan(16), CreatedNs);
        Id.TryWriteBytes(v.AsSpan(24, 16));
        Origin.TryWriteBytes(v.AsSpan(40, 16));
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(56), OriginGeneration);
        return v;
    }

    public static VolumeRecord Decode(byte[] key, byte[] v)
    {
        if (v.Length != Size) throw new CorruptionException(0, "volume record length", Size.ToString(), v.Length.ToString());
        return new VolumeRecord(Encoding.UTF8.GetString(key), new TreeId(BinaryPrimitives.ReadUInt64LittleEndian(v)), (v[8] & 1) != 0,
            BinaryPrimitives.ReadInt64LittleEndian(v.AsSpan(16)), new Guid(v.AsSpan(24, 16)), new Guid(v.AsSpan(40, 16)),
            BinaryPrimitives.ReadUInt64LittleEndian(v.AsSpan(56)));
    }

    public VolumeInfo ToInfo(Guid? received = null) =>
        new(Name, Tree, ReadOnly, DateTimeOffset.UnixEpoch.AddTicks(CreatedNs / 100), Id, Origin == Guid.Empty ? null : Origin, received);

    public static byte[] Key(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('/') || name.Contains('\0') || name is "." or "..")
            throw new InvalidRequestException($"'{name}' is not a valid volume name (no '/', not empty, not '.' or '..')");
        var k = Encoding.UTF8.GetBytes(name);
        if (k.Length > MaxNameBytes) throw new InvalidRequestException($"volume name of {k.Length} bytes is over the limit of {MaxNameBytes}");
        return k;
    }
}

/// <summary>A pool path: a volume name and the components of a path inside it.</summary>
internal readonly record struct PoolPath(string Volume, string[] Components)
{
    public static PoolPath Parse(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new InvalidRequestException("empty path (expected VOLUME/path)");
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new InvalidRequestException($"'{path}' names no volume (expected VOLUME/path)");
        foreach (var p in parts.Skip(1))
            if (p is "." or "..") throw new InvalidRequestException($"'{path}': '.' and '..' are not allowed in pool paths");
        return new PoolPath(parts[0], parts[1..]);
    }

    public bool IsVolumeRoot => Components.Length == 0;
    public string Leaf => Components[^1];
    public string[] ParentComponents => Components[..^1];
    public override string ToString() => Components.Length == 0 ? Volume : Volume + "/" + string.Join('/', Components);
}
