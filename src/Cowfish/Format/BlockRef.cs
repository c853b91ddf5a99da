namespace Cowfish.Format;

/// <summary>
/// A pointer to a metadata block together with the generation that wrote it. Reading through it
/// checks both, so a block that is old but otherwise valid (a lost or misdirected write) is caught.
/// </summary>
internal readonly record struct BlockRef(ulong Address, ulong Generation)
{
    public static readonly BlockRef None = default;
    public bool IsNone => Address == 0;
    public override string ToString() => $"{Address}@{Generation}";
}
