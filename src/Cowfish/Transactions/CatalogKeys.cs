using System.Buffers.Binary;
using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>
/// Keys and values of the catalog tree (layout in docs/format.md):
/// tree entries <c>0x01 | id (u64 BE)</c> → <c>root address (u64 LE) | root generation (u64 LE) | kind (u8)</c>, and
/// drop-queue entries <c>0x02 | sequence (u64 BE)</c> → <c>node address (u64 LE) | node generation (u64 LE)</c>.
/// Big-endian ids keep numeric order in the tree.
/// </summary>
internal static class CatalogKeys
{
    public const byte TreePrefix = 0x01;
    public const byte DropPrefix = 0x02;
    public const byte NamedPrefix = 0x03;

    /// <summary>Key of a named tree: <c>0x03 | UTF-8 name</c> → tree id (u64 LE).</summary>
    public static byte[] Named(string name)
    {
        var utf8 = System.Text.Encoding.UTF8.GetBytes(name);
        if (utf8.Length == 0 || utf8.Length > 200) throw new ArgumentException("a tree name has 1 to 200 bytes", nameof(name));
        var k = new byte[1 + utf8.Length];
        k[0] = NamedPrefix;
        utf8.CopyTo(k, 1);
        return k;
    }

    public static byte[] Tree(ulong id) => Prefixed(TreePrefix, id);
    public static byte[] Drop(ulong seq) => Prefixed(DropPrefix, seq);
    public static byte[] PrefixStart(byte prefix) => new[] { prefix };
    public static byte[] PrefixEnd(byte prefix) => new[] { (byte)(prefix + 1) };

    public static byte[] TreeValue(BlockRef root, TreeKind kind)
    {
        var v = new byte[17];
        RefValue(root).CopyTo(v, 0);
        v[16] = (byte)kind;
        return v;
    }

    public static byte[] DropValue(BlockRef node) => RefValue(node);

    public static bool TryParseTree(byte[] key, byte[] value, out ulong id, out BlockRef root, out TreeKind kind)
    {
        id = 0;
        root = BlockRef.None;
        kind = 0;
        if (key.Length != 9 || key[0] != TreePrefix || value.Length != 17) return false;
        id = BinaryPrimitives.ReadUInt64BigEndian(key.AsSpan(1));
        root = ReadRef(value);
        kind = (TreeKind)value[16];
        return ValueReferences.IsKnown(value[16]);
    }

    public static bool TryParseDrop(byte[] key, byte[] value, out ulong seq, out BlockRef node)
    {
        seq = 0;
        node = BlockRef.None;
        if (key.Length != 9 || key[0] != DropPrefix || value.Length != 16) return false;
        seq = BinaryPrimitives.ReadUInt64BigEndian(key.AsSpan(1));
        node = ReadRef(value);
        return true;
    }

    /// <summary>A block pointer as a value: address (u64 LE) then generation (u64 LE).</summary>
    public static byte[] RefValue(BlockRef r)
    {
        var v = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(v, r.Address);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(8), r.Generation);
        return v;
    }

    public static BlockRef ParseRefValue(byte[] value, ulong nodeAddress)
    {
        if (value.Length != 16) throw new CorruptionException(nodeAddress, "block pointer value length", "16", value.Length.ToString());
        return ReadRef(value);
    }

    private static BlockRef ReadRef(ReadOnlySpan<byte> v) =>
        new(BinaryPrimitives.ReadUInt64LittleEndian(v), BinaryPrimitives.ReadUInt64LittleEndian(v[8..]));

    private static byte[] Prefixed(byte prefix, ulong n)
    {
        var k = new byte[9];
        k[0] = prefix;
        BinaryPrimitives.WriteUInt64BigEndian(k.AsSpan(1), n);
        return k;
    }

    /// <summary>Key of the reference-count and space-map trees: the number, big-endian.</summary>
    public static byte[] U64Key(ulong n)
    {
        var k = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(k, n);
        return k;
    }

    public static ulong ParseU64Key(byte[] key, ulong nodeAddress)
    {
        if (key.Length != 8) throw new CorruptionException(nodeAddress, "u64 key length", "8", key.Length.ToString());
        return BinaryPrimitives.ReadUInt64BigEndian(key);
    }

    public static byte[] U64Value(ulong n)
    {
        var v = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(v, n);
        return v;
    }

    /// <summary><see cref="U64Key(ulong)"/> into a caller's buffer of 8 bytes.</summary>
    public static ReadOnlySpan<byte> U64Key(ulong n, Span<byte> into)
    {
        BinaryPrimitives.WriteUInt64BigEndian(into, n);
        return into[..8];
    }

    public static ulong ParseU64Value(ReadOnlySpan<byte> value, ulong nodeAddress)
    {
        if (value.Length != 8) throw new CorruptionException(nodeAddress, "u64 value length", "8", value.Length.ToString());
        return BinaryPrimitives.ReadUInt64LittleEndian(value);
    }
}
