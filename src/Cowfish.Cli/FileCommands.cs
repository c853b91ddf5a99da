using System.Text.Json;
using Cowfish.Files;

namespace Cowfish.Cli;

/// <summary>The namespace verbs: <c>ls</c>, <c>stat</c>, <c>mkdir</c>, <c>rm</c>, <c>mv</c>.</summary>
internal static class FileCommands
{
    public static readonly Command[] All =
    [
        new("ls", "ls POOL VOLUME[/PATH] [--json]", "List a directory (or one file): mode, inode, size, name.", Ls, Flags: ["--json"]),
        new("stat", "stat POOL VOLUME/PATH [--json]", "Show a file's inode: type, size, data bytes, mode, owner, links, times.", Stat, Flags: ["--json"]),
        new("mkdir", "mkdir POOL VOLUME/PATH [-p]", "Create a directory; -p creates missing parents and accepts an existing one.", Mkdir,
            Flags: ["-p", "--parents"]),
        new("rm", "rm POOL VOLUME/PATH [-r]", "Remove a file, symlink or empty directory; -r removes a directory tree.", Rm,
            Flags: ["-r", "--recursive"]),
        new("mv", "mv POOL SRC DST", "Rename within a volume; into DST/NAME if DST is a directory.", Mv),
    ];

    private static int Ls(Args a, Io io)
    {
        a.Expect(2, "POOL VOLUME[/PATH]");
        string path = a.Positional[1];
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        var st = fs.Stat(path);
        var rows = new List<(string Name, FileStat Stat, string? Target)>();
        if (st.Type == FileType.Directory)
        {
            foreach (var e in fs.ListDirectory(path).OrderBy(e => e.Name, StringComparer.Ordinal))
                rows.Add(Row(fs, PoolPaths.Join(path, e.Name), e.Name));
        }
        else rows.Add(Row(fs, path, PoolPaths.Leaf(path)));

        if (a.Has("--json"))
        {
            io.Out.WriteLine(JsonSerializer.Serialize(rows.Select(r => new
            {
                name = r.Name,
                type = PoolPaths.TypeName(r.Stat.Type),
                size = r.Stat.Size,
                inode = r.Stat.Inode,
                mode = r.Stat.Mode & 0xFFF,
                links = r.Stat.Links,
                target = r.Target,
            }), Cli.Json));
            return ExitCodes.Ok;
        }
        int sizeWidth = rows.Count == 0 ? 1 : rows.Max(r => r.Stat.Size.ToString().Length);
        int inoWidth = rows.Count == 0 ? 1 : rows.Max(r => r.Stat.Inode.ToString().Length);
        foreach (var (name, s, target) in rows)
        {
            string arrow = target is null ? "" : $" -> {target}";
            io.Out.WriteLine($"{PoolPaths.ModeString(s.Type, s.Mode)} {s.Links,3} {s.Inode.ToString().PadLeft(inoWidth)} {s.Size.ToString().PadLeft(sizeWidth)}  {name}{arrow}");
        }
        return ExitCodes.Ok;
    }

    private static (string, FileStat, string?) Row(FileSystem fs, string path, string name)
    {
        var s = fs.Stat(path);
        return (name, s, s.Type == FileType.Symlink ? fs.ReadSymlink(path) : null);
    }

    private static int Stat(Args a, Io io)
    {
        a.Expect(2, "POOL VOLUME/PATH");
        string path = a.Positional[1];
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        var s = fs.Stat(path);
        long? data = s.Type == FileType.File ? fs.DataRanges(path).Sum(r => r.Length) : null;
        string? target = s.Type == FileType.Symlink ? fs.ReadSymlink(path) : null;
        if (a.Has("--json"))
        {
            io.Out.WriteLine(JsonSerializer.Serialize(new
            {
                path,
                type = PoolPaths.TypeName(s.Type),
                inode = s.Inode,
                size = s.Size,
                data_bytes = data,
                mode = s.Mode & 0xFFF,
                uid = s.Uid,
                gid = s.Gid,
                links = s.Links,
                accessed = s.Accessed,
                modified = s.Modified,
                changed = s.Changed,
                born = s.Born,
                data_version = s.DataVersion,
                target,
            }, Cli.Json));
            return ExitCodes.Ok;
        }
        var o = io.Out;
        o.WriteLine($"path:         {path}");
        o.WriteLine($"type:         {PoolPaths.TypeName(s.Type)}{(target is null ? "" : $" -> {target}")}");
        o.WriteLine($"inode:        {s.Inode}");
        o.WriteLine($"size:         {s.Size} ({Cli.FormatBytes(s.Size)})");
        if (data is { } d) o.WriteLine($"data:         {d} ({Cli.FormatBytes((ulong)d)}; the rest is holes)");
        o.WriteLine($"mode:         {Convert.ToString(s.Mode & 0xFFF, 8).PadLeft(4, '0')} ({PoolPaths.ModeString(s.Type, s.Mode)})");
        o.WriteLine($"owner:        uid {s.Uid}, gid {s.Gid}");
        o.WriteLine($"links:        {s.Links}");
        o.WriteLine($"accessed:     {s.Accessed:O}");
        o.WriteLine($"modified:     {s.Modified:O}");
        o.WriteLine($"changed:      {s.Changed:O}");
        o.WriteLine($"born:         {s.Born:O}");
        o.WriteLine($"data version: {s.DataVersion}");
        return ExitCodes.Ok;
    }

    private static int Mkdir(Args a, Io io)
    {
        a.Expect(2, "POOL VOLUME/PATH");
        string path = a.Positional[1];
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        if (!a.Has("-p", "--parents"))
        {
            fs.CreateDirectory(path);
            return ExitCodes.Ok;
        }
        string volume = PoolPaths.Volume(path);
        if (!fs.Exists(volume)) throw new NotFoundException($"volume '{volume}' does not exist");
        string at = volume;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries).Skip(1))
        {
            at = PoolPaths.Join(at, part);
            if (!fs.Exists(at)) fs.CreateDirectory(at);
            else if (fs.Stat(at).Type != FileType.Directory) throw new InvalidRequestException($"{at} exists and is not a directory");
        }
        return ExitCodes.Ok;
    }

    private static int Rm(Args a, Io io)
    {
        a.Expect(2, "POOL VOLUME/PATH");
        string path = a.Positional[1];
        if (PoolPaths.IsVolumeRoot(path)) throw new UsageException($"{path} is a volume; use cowfish volume delete");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        var st = fs.Stat(path);
        if (st.Type == FileType.Directory && fs.ListDirectory(path).Count > 0)
        {
            if (!a.Has("-r", "--recursive")) throw new InvalidRequestException($"{path} is a directory that is not empty (use -r)");
            RemoveTree(fs, path);
        }
        else fs.Remove(path);
        // Removed files' blocks come back over later commits; run them now, before the process ends.
        fs.Reclaim();
        return ExitCodes.Ok;
    }

    /// <summary>Removes a directory tree children first, with an explicit stack so that depth is not bounded by the call stack.</summary>
    private static void RemoveTree(FileSystem fs, string root)
    {
        var stack = new Stack<(string Path, bool Expanded)>();
        stack.Push((root, false));
        while (stack.Count > 0)
        {
            var (path, expanded) = stack.Pop();
            if (expanded || fs.Stat(path).Type != FileType.Directory)
            {
                fs.Remove(path);
                continue;
            }
            stack.Push((path, true));
            foreach (var e in fs.ListDirectory(path)) stack.Push((PoolPaths.Join(path, e.Name), false));
        }
    }

    private static int Mv(Args a, Io io)
    {
        a.Expect(3, "POOL SRC DST");
        string src = a.Positional[1], dst = a.Positional[2];
        if (PoolPaths.IsVolumeRoot(src))
            throw new UsageException("mv works inside a volume; use cowfish volume rename to rename a volume");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        fs.Rename(src, PoolPaths.IntoDirectory(fs, dst, PoolPaths.Leaf(src)));
        return ExitCodes.Ok;
    }
}
