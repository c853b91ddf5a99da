using Cowfish.Files;
using Cowfish.Transactions;

namespace Cowfish.Cli;

/// <summary>
/// How a verb reaches its pool. Run alone, a verb opens the pool file itself (and takes its lock);
/// run inside <c>cowfish serve</c> on behalf of a control-socket client, it borrows the server's
/// open pool instead, so that it works while NBD clients use the pool.
/// </summary>
internal class PoolAccess
{
    /// <summary>Opening the pool file directly: what a verb does when no server holds the pool.</summary>
    public static readonly PoolAccess Direct = new();

    /// <summary>Whether this is <see cref="Direct"/> access, where a verb may be forwarded to a server.</summary>
    public virtual bool CanForward => true;

    public virtual FileSystem OpenFiles(string path) => FileSystem.Open(path);

    public virtual PoolLease OpenPool(string path) => new(Pool.Open(path), owned: true);
}

/// <summary>A pool a verb uses: closed at the end if the verb opened it, left open if it was borrowed.</summary>
internal sealed class PoolLease(Pool pool, bool owned) : IDisposable
{
    public Pool Pool { get; } = pool;

    public void Dispose()
    {
        if (owned) Pool.Dispose();
    }
}

/// <summary>
/// Access from inside the server: the served pool (named by any path that resolves to its file) is
/// shared; any other pool is opened as usual. Relative paths resolve against the client's directory.
/// </summary>
internal sealed class ServedPoolAccess(Pool pool, string poolPath, string cwd) : PoolAccess
{
    private readonly string _full = Path.GetFullPath(poolPath);

    public override bool CanForward => false;

    private bool IsServed(string path) => Path.GetFullPath(path, cwd) == _full;

    public override FileSystem OpenFiles(string path) =>
        IsServed(path) ? new FileSystem(pool, ownsPool: false) : FileSystem.Open(Path.GetFullPath(path, cwd));

    public override PoolLease OpenPool(string path) =>
        IsServed(path) ? new PoolLease(pool, owned: false) : new PoolLease(Pool.Open(Path.GetFullPath(path, cwd)), owned: true);
}
