using Cowfish.Format;

namespace Cowfish.Trees;

/// <summary>What a tree holds; stored in every node so that check and drop know how to read its values.</summary>
internal enum TreeKind : byte
{
    /// <summary>The pool's catalog: tree roots and the drop queue.</summary>
    Catalog = 1,
    /// <summary>Reference counts of blocks referenced more than once.</summary>
    RefCount = 2,
    /// <summary>Space-map page index to bitmap page address.</summary>
    SpaceMap = 3,
    /// <summary>A general tree whose values hold no block references.</summary>
    Plain = 4,
    /// <summary>A volume: inodes, directory entries and extended attributes; inodes of files point to their extent trees.</summary>
    Volume = 5,
    /// <summary>One file's extent map: file block → data extent.</summary>
    FileExtents = 6,
    /// <summary>
    /// A running relocation's forwarding table: old block → the copy that every later referrer of
    /// the old block takes instead; each value holds one reference to its copy.
    /// </summary>
    Relocation = 7,
}

/// <summary>
/// A block reference held in a leaf value: a run of data blocks, or the root of another tree
/// (a file's extent map inside a volume). Counts are kept per run start and per subtree root.
/// </summary>
internal readonly record struct ValueRef(ulong Address, uint Blocks, ulong SubtreeGeneration, TreeKind SubtreeKind)
{
    public bool IsSubtree => SubtreeKind != 0;
    public BlockRef Subtree => new(Address, SubtreeGeneration);
    public static ValueRef Data(ulong address, uint blocks) => new(address, blocks, 0, 0);
    public static ValueRef Tree(BlockRef root, TreeKind kind) => new(root.Address, 1, root.Generation, kind);
}

/// <summary>
/// Block references held inside leaf values. A leaf owns one reference to each block run its
/// values name: shadowing a shared leaf adds a reference to each, and deleting a value or
/// dropping the leaf's last reference releases them (Rodeh's lazy reference counts).
/// </summary>
internal interface IValueReferences
{
    /// <summary>Adds the data runs and subtree roots that the entry (<paramref name="key"/>, <paramref name="value"/>) references.</summary>
    void Collect(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, List<ValueRef> into);

    /// <summary>
    /// The value with each reference it holds replaced by what <paramref name="map"/> returns for
    /// it (relocation: the block moved, the reference follows). Returns <paramref name="value"/>
    /// itself when nothing changed. A replacement keeps the run length and the subtree kind.
    /// </summary>
    byte[] Rewrite(ReadOnlySpan<byte> key, byte[] value, Func<ValueRef, ValueRef> map);
}

internal static class ValueReferences
{
    private static readonly IValueReferences?[] Registry = new IValueReferences?[256];

    /// <summary>Registers the reader of block references for values of trees of <paramref name="kind"/>.</summary>
    public static void Register(TreeKind kind, IValueReferences refs) => Registry[(byte)kind] = refs;

    public static IValueReferences? For(TreeKind kind) => Registry[(byte)kind];

    public static bool IsKnown(byte kind) => Enum.IsDefined(typeof(TreeKind), kind);
}
