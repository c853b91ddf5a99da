using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Cowfish.Format;
using Cowfish.Trees;

namespace Cowfish.Relocation;

/// <summary>
/// The entries of a relocation pass's forwarding tree (kind <see cref="TreeKind.Relocation"/>):
/// key = the old block (address, generation; 0 for a data run), value = its copy. Each value
/// holds one reference to its copy, so the copy outlives every change between slices, and check
/// and background reclaim count it like any other reference.
/// </summary>
/// <remarks>
/// Key: u64 address, u64 generation, both big-endian (so entries sort by address). Value (21
/// bytes, little-endian): u64 address, u32 blocks, u64 subtree generation, u8 subtree kind (0 for
/// a data run): the fields of <see cref="ValueRef"/>.
/// </remarks>
internal sealed class ForwardingTable : IValueReferences
{
    public const int KeySize = 16;
    public const int ValueSize = 21;

#pragma warning disable CA2255 // check and reclaim must understand a forwarding tree left by a crash before any relocation runs
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Register() => ValueReferences.Register(TreeKind.Relocation, new ForwardingTable());

    public static byte[] Key(BlockRef old)
    {
        var k = new byte[KeySize];
        BinaryPrimitives.WriteUInt64BigEndian(k, old.Address);
        BinaryPrimitives.WriteUInt64BigEndian(k.AsSpan(8), old.Generation);
        return k;
    }

    public static byte[] Value(ValueRef to)
    {
        var v = new byte[ValueSize];
        BinaryPrimitives.WriteUInt64LittleEndian(v, to.Address);
        BinaryPrimitives.WriteUInt32LittleEndian(v.AsSpan(8), to.Blocks);
        BinaryPrimitives.WriteUInt64LittleEndian(v.AsSpan(12), to.SubtreeGeneration);
        v[20] = (byte)to.SubtreeKind;
        return v;
    }

    public void Collect(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, List<ValueRef> into)
    {
        if (key.Length != KeySize || value.Length != ValueSize)
            throw new CorruptionException(0, "forwarding entry", $"{KeySize}-byte key, {ValueSize}-byte value", $"{key.Length}/{value.Length} bytes");
        byte kind = value[20];
        if (kind != 0 && !ValueReferences.IsKnown(kind))
            throw new CorruptionException(0, "forwarding entry", "a known subtree kind", kind.ToString());
        into.Add(new ValueRef(
            BinaryPrimitives.ReadUInt64LittleEndian(value),
            BinaryPrimitives.ReadUInt32LittleEndian(value[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(value[12..]),
            (TreeKind)kind));
    }

    public byte[] Rewrite(ReadOnlySpan<byte> key, byte[] value, Func<ValueRef, ValueRef> map)
    {
        var refs = new List<ValueRef>(1);
        Collect(key, value, refs);
        var moved = map(refs[0]);
        return moved == refs[0] ? value : Value(moved);
    }
}
