namespace Cowfish.Transactions;

/// <summary>Settings for opening or creating a pool.</summary>
public sealed record PoolOptions
{
    /// <summary>Decoded nodes kept in memory; this bounds the engine's cache.</summary>
    public int CacheNodes { get; init; } = 16_384;

    /// <summary>
    /// Runs after every commit, on the committing thread (after it is durable, for a commit that waits). Tests use it for
    /// strict mode: a full check after each commit (the checker's <c>Strict</c> options set this).
    /// </summary>
    public Action<Pool>? AfterCommit { get; init; }

    /// <summary>Tree nodes a commit may release from dropped trees before it writes (background reclaim budget).</summary>
    public int DropBudgetPerCommit { get; init; } = 512;

    /// <summary>Blocks by which the pool grows when it runs out of free space.</summary>
    public uint GrowthBlocks { get; init; } = 2048;
}
