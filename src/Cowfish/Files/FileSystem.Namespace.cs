using System.Text;

namespace Cowfish.Files;

public sealed partial class FileSystem
{
    public FileStat Stat(string path)
    {
        SettleWrites();
        var p = PoolPath.Parse(path);
        return ReadVolume(p.Volume, v =>
        {
            ulong ino = v.Resolve(p);
            return ToStat(ino, v.GetInode(ino));
        });
    }

    public bool Exists(string path)
    {
        var p = PoolPath.Parse(path);
        try { return ReadVolume(p.Volume, v => v.TryResolve(p, out _)); }
        catch (Exception e) when (e is NotFoundException or InvalidRequestException) { return false; }
    }

    public IReadOnlyList<DirectoryEntry> ListDirectory(string path)
    {
        var p = PoolPath.Parse(path);
        return ReadVolume(p.Volume, v =>
        {
            ulong ino = v.Resolve(p);
            if (v.GetInode(ino).Type != FileType.Directory) throw new InvalidRequestException($"{p}: not a directory");
            return (IReadOnlyList<DirectoryEntry>)v.List(ino).ToList();
        });
    }

    public void CreateDirectory(string path, uint mode = 0x1ED) => CreateNode(path, FileType.Directory, mode, null);

    /// <summary>Creates an empty regular file.</summary>
    public void CreateFile(string path, uint mode = 0x1A4) => CreateNode(path, FileType.File, mode, null);

    public void CreateSymlink(string path, string target)
    {
        if (string.IsNullOrEmpty(target)) throw new InvalidRequestException("empty symlink target");
        CreateNode(path, FileType.Symlink, 0x1FF, Encoding.UTF8.GetBytes(target));
    }

    private void CreateNode(string path, FileType type, uint mode, byte[]? target)
    {
        var p = PoolPath.Parse(path);
        if (p.IsVolumeRoot) throw new InvalidRequestException($"{p} is a volume; name a path inside it");
        var name = FileKeys.Name(p.Leaf);
        WriteVolume(p.Volume, v => v.Create(v.Resolve(p with { Components = p.ParentComponents }), name, type, mode, target));
    }

    public string ReadSymlink(string path)
    {
        var p = PoolPath.Parse(path);
        return ReadVolume(p.Volume, v =>
        {
            var inode = v.GetInode(v.Resolve(p));
            if (inode.Type != FileType.Symlink) throw new InvalidRequestException($"{p}: not a symlink");
            return Encoding.UTF8.GetString(inode.SymlinkTarget);
        });
    }

    /// <summary>A hard link: <paramref name="newPath"/> names the same inode as <paramref name="existing"/>.</summary>
    public void Link(string existing, string newPath)
    {
        var a = PoolPath.Parse(existing);
        var b = PoolPath.Parse(newPath);
        if (a.Volume != b.Volume) throw new InvalidRequestException("hard links cannot cross volumes");
        if (b.IsVolumeRoot) throw new InvalidRequestException($"{b} is a volume; name a path inside it");
        var name = FileKeys.Name(b.Leaf);
        WriteVolume(a.Volume, v =>
        {
            v.Link(v.Resolve(a), v.Resolve(b with { Components = b.ParentComponents }), name);
            return 0;
        });
    }

    /// <summary>Removes a file, symlink or empty directory (its data is given back in the background).</summary>
    public void Remove(string path)
    {
        var p = PoolPath.Parse(path);
        if (p.IsVolumeRoot) throw new InvalidRequestException($"{p} is a volume; use DeleteVolume");
        var name = FileKeys.Name(p.Leaf);
        WriteVolume(p.Volume, v =>
        {
            v.Unlink(v.Resolve(p with { Components = p.ParentComponents }), name);
            return 0;
        });
    }

    /// <summary>Renames within a volume, replacing a target of the same kind as rename(2) does.</summary>
    public void Rename(string from, string to)
    {
        var a = PoolPath.Parse(from);
        var b = PoolPath.Parse(to);
        if (a.Volume != b.Volume) throw new InvalidRequestException("rename cannot cross volumes (use a clone, then remove)");
        if (a.IsVolumeRoot || b.IsVolumeRoot) throw new InvalidRequestException("use RenameVolume to rename a volume");
        var fromName = FileKeys.Name(a.Leaf);
        var toName = FileKeys.Name(b.Leaf);
        WriteVolume(a.Volume, v =>
        {
            v.Rename(v.Resolve(a with { Components = a.ParentComponents }), fromName, v.Resolve(b with { Components = b.ParentComponents }), toName);
            return 0;
        });
    }

    /// <summary>Changes any of mode (permission bits), owner, group and the access and modification times.</summary>
    public void SetAttributes(string path, uint? mode = null, uint? uid = null, uint? gid = null, DateTimeOffset? accessed = null, DateTimeOffset? modified = null)
    {
        var p = PoolPath.Parse(path);
        WriteVolume(p.Volume, v =>
        {
            ulong ino = v.Resolve(p);
            var i = v.GetInode(ino);
            v.PutInode(ino, i with
            {
                Mode = mode is { } m ? (i.Mode & VolumeWriter.TypeMask) | (m & 0xFFF) : i.Mode,
                Uid = uid ?? i.Uid,
                Gid = gid ?? i.Gid,
                AtimeNs = accessed is { } at ? ToNs(at) : i.AtimeNs,
                MtimeNs = modified is { } mt ? ToNs(mt) : i.MtimeNs,
                CtimeNs = Inode.NowNs(),
            });
            return 0;
        });
    }

    public void SetXattr(string path, string name, byte[] value)
    {
        var p = PoolPath.Parse(path);
        var n = Encoding.UTF8.GetBytes(name);
        WriteVolume(p.Volume, v => { v.SetXattr(v.Resolve(p), n, value); return 0; });
    }

    public bool TryGetXattr(string path, string name, out byte[] value)
    {
        var p = PoolPath.Parse(path);
        var n = Encoding.UTF8.GetBytes(name);
        byte[] found = [];
        bool ok = ReadVolume(p.Volume, v => v.TryGetXattr(v.Resolve(p), n, out found));
        value = found;
        return ok;
    }

    public IReadOnlyList<(string Name, byte[] Value)> ListXattrs(string path)
    {
        var p = PoolPath.Parse(path);
        return ReadVolume(p.Volume, v => (IReadOnlyList<(string, byte[])>)v.Xattrs(v.Resolve(p)).ToList());
    }

    public bool RemoveXattr(string path, string name)
    {
        var p = PoolPath.Parse(path);
        var n = Encoding.UTF8.GetBytes(name);
        return WriteVolume(p.Volume, v => v.RemoveXattr(v.Resolve(p), n));
    }

    internal static FileStat ToStat(ulong ino, Inode i) => new(ino, i.Type, i.Mode, i.Uid, i.Gid, i.Nlink, i.Size,
        FromNs(i.AtimeNs), FromNs(i.MtimeNs), FromNs(i.CtimeNs), FromNs(i.BtimeNs), i.DataVersion);

    private static DateTimeOffset FromNs(long ns) => DateTimeOffset.UnixEpoch.AddTicks(ns / 100);
    private static long ToNs(DateTimeOffset t) => (t - DateTimeOffset.UnixEpoch).Ticks * 100;
}
