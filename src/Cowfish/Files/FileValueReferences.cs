using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>
/// Tells the trees which block references file-system values hold: an inode points to its extent
/// tree, and an extent record to its disk extent. Registered when the assembly loads, so that
/// check and background reclaim understand volumes even if no file API was called.
/// </summary>
internal sealed class FileValueReferences : IValueReferences
{
    private readonly TreeKind _kind;

    private FileValueReferences(TreeKind kind) => _kind = kind;

#pragma warning disable CA2255 // check and reclaim must understand file-system trees before any file API runs
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Register()
    {
        ValueReferences.Register(TreeKind.Volume, new FileValueReferences(TreeKind.Volume));
        ValueReferences.Register(TreeKind.FileExtents, new FileValueReferences(TreeKind.FileExtents));
    }

    public void Collect(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, List<ValueRef> into)
    {
        if (_kind == TreeKind.Volume)
        {
            // Only inode values can hold a reference; the header, entries and xattrs hold none.
            if (key.Length != 9 || key[0] != FileKeys.Inode) return;
            var root = Inode.ExtentRootOf(value);
            if (!root.IsNone) into.Add(ValueRef.Tree(root, TreeKind.FileExtents));
        }
        else if (value.Length >= Extent.HeaderSize)
        {
            var (start, blocks) = Extent.DiskExtentOf(value);
            into.Add(ValueRef.Data(start, blocks));
        }
    }

    public byte[] Rewrite(ReadOnlySpan<byte> key, byte[] value, Func<ValueRef, ValueRef> map)
    {
        var refs = new List<ValueRef>(1);
        Collect(key, value, refs);
        if (refs.Count == 0) return value;
        var moved = map(refs[0]);
        if (moved == refs[0]) return value;
        var copy = (byte[])value.Clone();
        if (_kind == TreeKind.Volume)
        {
            // The inode's extent root: address and generation (docs/format.md, inode bytes 64..80).
            BinaryPrimitives.WriteUInt64LittleEndian(copy.AsSpan(64), moved.Address);
            BinaryPrimitives.WriteUInt64LittleEndian(copy.AsSpan(72), moved.SubtreeGeneration);
        }
        else
        {
            // The record's disk start; the CRCs describe the bytes, which moved unchanged.
            BinaryPrimitives.WriteUInt64LittleEndian(copy, moved.Address);
        }
        return copy;
    }
}
