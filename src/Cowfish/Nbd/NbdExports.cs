using Cowfish.Files;

namespace Cowfish.Nbd;

/// <summary>
/// Maps export names to files of the pool. An export name is a pool path, <c>VOLUME/PATH</c> (a
/// leading slash is ignored, so <c>nbd://host/vol/disk.img</c> works). Files in read-only snapshots,
/// and every file when the server is read-only, are exported read-only.
/// </summary>
internal sealed class NbdExports(FileSystem fs, NbdServerOptions options)
{
    /// <summary>Most exports NBD_OPT_LIST reports; a pool may hold millions of files.</summary>
    public const int ListLimit = 10_000;

    public static string Normalize(string name) => name.TrimStart('/');

    /// <summary>
    /// Opens the export, creating it as a sparse file first if <see cref="NbdServerOptions.CreateSize"/>
    /// is set; returns null with a reason when it cannot be served.
    /// </summary>
    public NbdExport? TryOpen(string name, out string reason)
    {
        string path = Normalize(name);
        if (path.Length == 0)
        {
            reason = "no export name given; name a file as VOLUME/PATH";
            return null;
        }
        try
        {
            if (options.CreateSize is long size && !options.ReadOnly && !fs.Exists(path) && path.Contains('/'))
            {
                try
                {
                    fs.CreateFile(path);
                    fs.Truncate(path, size);
                    options.Log?.Invoke($"created export {path} ({size} bytes, sparse)");
                }
                catch (InvalidRequestException) when (fs.Exists(path))
                {
                    // Another connection created it first.
                }
            }
            var handle = fs.OpenFile(path);
            reason = "";
            return new NbdExport(path, handle, options.ReadOnly || handle.ReadOnly);
        }
        catch (CowfishException e)
        {
            reason = $"{path}: {e.Message}";
            return null;
        }
    }

    /// <summary>Every regular file of every volume, up to <see cref="ListLimit"/>, with a description.</summary>
    public List<(string Name, string Description)> List()
    {
        var result = new List<(string, string)>();
        foreach (var v in fs.ListVolumes())
        {
            var pending = new Stack<string>();
            pending.Push(v.Name);
            while (pending.Count > 0 && result.Count < ListLimit)
            {
                string dir = pending.Pop();
                IReadOnlyList<DirectoryEntry> entries;
                try { entries = fs.ListDirectory(dir); }
                catch (NotFoundException) { continue; } // removed while we walked
                foreach (var e in entries.OrderBy(e => e.Name, StringComparer.Ordinal))
                {
                    string path = dir + "/" + e.Name;
                    if (e.Type == FileType.Directory) pending.Push(path);
                    else if (e.Type == FileType.File && result.Count < ListLimit)
                        result.Add((path, v.ReadOnly ? "cowfish file (read-only snapshot)" : "cowfish file"));
                }
            }
        }
        return result;
    }
}

/// <summary>One open export: a file handle, its size when the client chose it, and whether it may be written.</summary>
internal sealed class NbdExport(string name, FileHandle handle, bool readOnly)
{
    public string Name { get; } = name;
    public FileHandle Handle { get; } = handle;
    public bool ReadOnly { get; } = readOnly;
    public ulong Size { get; } = (ulong)handle.Size;
    public string Description => ReadOnly ? $"cowfish {Name} (read-only)" : $"cowfish {Name}";
}
