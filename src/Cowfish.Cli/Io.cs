namespace Cowfish.Cli;

/// <summary>
/// The standard streams of one run of the command. <see cref="In"/> and <see cref="BinaryOut"/> are
/// null when the caller has none (in-process tests): verbs that need stdin then fail with a usage
/// error, and <c>cat</c> writes UTF-8 text to <see cref="Out"/> instead. <see cref="ShowProgress"/> is
/// set only when stderr is a terminal, so that scripts and logs never see progress bars.
/// <see cref="OutIsTerminal"/> lets verbs that write binary streams (<c>send</c>) refuse a terminal.
/// <see cref="Pools"/> says how verbs reach their pool; <see cref="Cwd"/> is where relative host paths
/// start (the client's directory when a server runs the verb for it).
/// </summary>
internal sealed record Io(TextWriter Out, TextWriter Err, Stream? In = null, Stream? BinaryOut = null, bool ShowProgress = false,
    bool OutIsTerminal = false, PoolAccess? Access = null, string? Cwd = null)
{
    public PoolAccess Pools => Access ?? PoolAccess.Direct;

    /// <summary>A host path made absolute against <see cref="Cwd"/>.</summary>
    public string HostPath(string path) => Path.GetFullPath(path, Cwd ?? Environment.CurrentDirectory);
}
