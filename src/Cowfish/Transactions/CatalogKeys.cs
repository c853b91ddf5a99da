using System.Buffers.Binary;
using Cowfish.Trees;

namespace Cowfish.Transactions;

/// <summary>
/// Keys and values of the catalog tree (layout in docs/format.md):
/// tree entries <c>0x01 | id (u64 BE)</c> → <c>root (u64 LE) | kind (u8)</c>, and
/// drop-queue entries <c>0x02 | sequence (u64 BE)</c> → <c>node address (u64 LE)</c>.
/// Big-endian ids keep numeric order in the tree.
/// </summary>
internal static class CatalogKeys
{
    public const byte TreePrefix = 0x01;
    public const byte DropPrefix = 0x02;

    public static byte[] Tree(ulong id) => Prefixed(TreePrefix, id);
    public static byte[] Drop(ulong seq) => Prefixed(DropPrefix, seq);
    public static byte[] PrefixStart(byte prefix) => new[] { prefix };
    public static byte[] PrefixEnd(byte prefix) => new[] { (byte)(prefix + 1) };

    public static byte[] TreeValue(ulong root, TreeKind kind)
    {
        var v = new byte[9];
        BinaryPrimitives.WriteUInt64LittleEndian(v, root);
        v[8] = (byte)kind;
        return v;
    }

    public static byte[] DropValue(ulong address)
    {
        var v = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(v, address);
        return v;
    }

    public static bool TryParseTree(byte[] key, byte[] value, out ulong id, out ulong root, out TreeKind kind)
    {
        id = root = 0;
        kind = 0;
        if (key.Length != 9 || key[0] != TreePrefix || value.Length != 9) return false;
        id = BinaryPrimitives.ReadUInt64BigEndian(key.AsSpan(1));
        root = BinaryPrimitives.ReadUInt64LittleEndian(value);
        kind = (TreeKind)value[8];
        return ValueReferences.IsKnown(value[8]);
    }

    public static bool TryParseDrop(byte[] key, byte[] value, out ulong seq, out ulong address)
    {
        seq = address = 0;
        if (key.Length != 9 || key[0] != DropPrefix || value.Length != 8) return false;
        seq = BinaryPrimitives.ReadUInt64BigEndian(key.AsSpan(1));
        address = BinaryPrimitives.ReadUInt64LittleEndian(value);
        return true;
    }

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

    public static ulong ParseU64Value(byte[] value, ulong nodeAddress)
    {
        if (value.Length != 8) throw new CorruptionException(nodeAddress, "u64 value length", "8", value.Length.ToString());
        return BinaryPrimitives.ReadUInt64LittleEndian(value);
    }
}
