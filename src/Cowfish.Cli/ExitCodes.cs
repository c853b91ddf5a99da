namespace Cowfish.Cli;

/// <summary>Exit codes of the cowfish command (also listed in README.md).</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>check found faults.</summary>
    public const int Faults = 1;
    /// <summary>The command line was wrong.</summary>
    public const int Usage = 2;
    /// <summary>A named thing (tree, key, volume, pool path, host file to import) does not exist.</summary>
    public const int NotFound = 3;
    /// <summary>
    /// The pool could not be used (not a pool, corrupt, busy, unsupported version, I/O failure), or the
    /// engine refused the request (a write to a read-only snapshot, a path that is not a directory, ...).
    /// </summary>
    public const int Error = 4;
}

/// <summary>A command-line mistake: printed with the command's usage, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
