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
}
