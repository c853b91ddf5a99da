using Cowfish.Files;

namespace Cowfish.Cli;

/// <summary>
/// The CLI's view of pool paths (<c>VOLUME/dir/file</c>) and small helpers the file-system verbs
/// share. The engine parses and validates paths itself; this only splits and joins them.
/// </summary>
internal static class PoolPaths
{
    private static string[] Parts(string path) => path.Split('/', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Whether the path names a volume itself rather than something inside it.</summary>
    public static bool IsVolumeRoot(string path) => Parts(path).Length <= 1;

    public static string Volume(string path) => Parts(path) is { Length: > 0 } p ? p[0] : path;

    /// <summary>The last component: the name a file gets when it is cloned, moved or exported into a directory.</summary>
    public static string Leaf(string path) => Parts(path) is { Length: > 0 } p ? p[^1] : path;

    public static string Join(string dir, string name) => dir.TrimEnd('/') + "/" + name;

    /// <summary>
    /// If <paramref name="target"/> is an existing directory (or volume), the path of
    /// <paramref name="name"/> inside it, as cp and mv do; otherwise <paramref name="target"/> itself.
    /// </summary>
    public static string IntoDirectory(FileSystem fs, string target, string name) =>
        fs.Exists(target) && fs.Stat(target).Type == FileType.Directory ? Join(target, name) : target;

    /// <summary>Creates an empty file if nothing has the name yet; returns whether it did.</summary>
    public static bool EnsureFile(FileSystem fs, string path)
    {
        if (fs.Exists(path)) return false;
        if (IsVolumeRoot(path)) throw new NotFoundException($"volume '{Volume(path)}' does not exist");
        fs.CreateFile(path);
        return true;
    }

    public static string TypeName(FileType t) => t switch
    {
        FileType.File => "file",
        FileType.Directory => "directory",
        FileType.Symlink => "symlink",
        _ => $"type {(int)t}",
    };

    /// <summary>ls-style mode string: the type letter and the nine permission bits, such as <c>-rw-r--r--</c>.</summary>
    public static string ModeString(FileType t, uint mode)
    {
        const string Rwx = "rwxrwxrwx";
        var c = new char[10];
        c[0] = t switch { FileType.Directory => 'd', FileType.Symlink => 'l', _ => '-' };
        for (int i = 0; i < 9; i++) c[i + 1] = (mode & (1u << (8 - i))) != 0 ? Rwx[i] : '-';
        return new string(c);
    }
}
