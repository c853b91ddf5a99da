using Cowfish.Format;

namespace Cowfish.Trees;

/// <summary>
/// What a tree needs from the transaction that changes it: block allocation and reference counts.
/// Trees that are never shared (the pool's own bookkeeping trees) get a space whose counts are always 1.
/// </summary>
internal interface ITreeSpace
{
    /// <summary>Generation of the transaction; nodes written in it carry this number.</summary>
    ulong Generation { get; }

    NodeStore Store { get; }

    /// <summary>How many parents or roots reference the block (1 unless recorded otherwise).</summary>
    uint RefCount(ulong address);

    /// <summary>Adds one reference to a run that is already in use.</summary>
    void AddRef(ulong address, uint blocks);

    /// <summary>Drops one reference; the run is freed when none is left.</summary>
    void Release(ulong address, uint blocks);

    /// <summary>
    /// Drops one reference to the root of a whole tree held in a value. When it was the last, the
    /// tree is queued for background release (its nodes are freed a bounded number per commit).
    /// </summary>
    void ReleaseSubtree(BlockRef root);

    /// <summary>Allocates one block for a node.</summary>
    ulong AllocateNode();
}
