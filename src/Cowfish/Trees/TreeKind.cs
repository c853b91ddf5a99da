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
}

/// <summary>
/// Block references held inside leaf values. A leaf owns one reference to each block run its
/// values name: shadowing a shared leaf adds a reference to each, and deleting a value or
/// dropping the leaf's last reference releases them (Rodeh's lazy reference counts).
/// </summary>
internal interface IValueReferences
{
    /// <summary>Adds the (first block, block count) runs that <paramref name="value"/> references.</summary>
    void Collect(ReadOnlySpan<byte> value, List<(ulong Address, uint Blocks)> into);
}

internal static class ValueReferences
{
    private static readonly IValueReferences?[] Registry = new IValueReferences?[256];

    /// <summary>Registers the reader of block references for values of trees of <paramref name="kind"/>.</summary>
    public static void Register(TreeKind kind, IValueReferences refs) => Registry[(byte)kind] = refs;

    public static IValueReferences? For(TreeKind kind) => Registry[(byte)kind];

    public static bool IsKnown(byte kind) => Enum.IsDefined(typeof(TreeKind), kind);
}
