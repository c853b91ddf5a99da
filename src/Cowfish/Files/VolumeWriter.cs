using System.Buffers.Binary;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>Changes to one volume inside a write transaction.</summary>
internal sealed class VolumeWriter : VolumeReader
{
    public const uint TypeMask = 0xF000, DirBits = 0x4000, FileBits = 0x8000, SymlinkBits = 0xA000;

    private readonly TreeWriter _w;

    public VolumeWriter(VolumeRecord record, WriteTransaction tx) : this(record, tx, tx.TreeWriterFor(record.Tree)) { }

    private VolumeWriter(VolumeRecord record, WriteTransaction tx, TreeWriter w) : base(record, w, tx.Pool.Store)
    {
        Tx = tx;
        _w = w;
    }

    public WriteTransaction Tx { get; }
    public ITreeSpace Space => Tx.SharedSpace;

    /// <summary>Writes the header and root directory of a new, empty volume.</summary>
    public static void Format(TreeWriter w)
    {
        long now = Inode.NowNs();
        w.Put(FileKeys.HeaderKey, Header(RootIno + 1));
        w.Put(FileKeys.InodeKey(RootIno), new Inode
        {
            Type = FileType.Directory, Mode = DirBits | 0x1ED /* 0755 */, Nlink = 2,
            AtimeNs = now, MtimeNs = now, CtimeNs = now, BtimeNs = now,
        }.Encode());
    }

    private static byte[] Header(ulong nextIno)
    {
        var v = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(v, nextIno);
        return v;
    }

    public ulong AllocateIno()
    {
        if (!_w.TryGet(FileKeys.HeaderKey, out var h) || h.Length != 8) throw new CorruptionException(0, $"header of volume '{Record.Name}'", "8 bytes", h?.Length.ToString() ?? "missing");
        ulong next = BinaryPrimitives.ReadUInt64LittleEndian(h);
        _w.Put(FileKeys.HeaderKey, Header(next + 1));
        return next;
    }

    /// <summary>Stores an inode. Its extent-root reference is the caller's to account for (see <see cref="SaveExtents"/>).</summary>
    public void PutInode(ulong ino, Inode inode) => _w.Put(FileKeys.InodeKey(ino), inode.Encode(), releaseReplaced: false);

    private static byte[] Entry(ulong ino, FileType type)
    {
        var v = new byte[9];
        BinaryPrimitives.WriteUInt64LittleEndian(v, ino);
        v[8] = (byte)type;
        return v;
    }

    // --- namespace ------------------------------------------------------------------------

    public ulong Create(ulong dir, byte[] name, FileType type, uint mode, byte[]? symlinkTarget = null)
    {
        var parent = GetInode(dir);
        if (parent.Type != FileType.Directory) throw new InvalidRequestException("parent is not a directory");
        if (TryLookup(dir, name, out _, out _)) throw new InvalidRequestException($"'{System.Text.Encoding.UTF8.GetString(name)}' already exists");
        if (symlinkTarget is { Length: > Inode.MaxSymlinkTarget }) throw new InvalidRequestException($"symlink target over {Inode.MaxSymlinkTarget} bytes");
        ulong ino = AllocateIno();
        long now = Inode.NowNs();
        uint bits = type switch { FileType.Directory => DirBits, FileType.Symlink => SymlinkBits, _ => FileBits };
        PutInode(ino, new Inode
        {
            Type = type, Mode = bits | (mode & 0xFFF), Nlink = type == FileType.Directory ? 2u : 1u,
            Size = (ulong)(symlinkTarget?.Length ?? 0), SymlinkTarget = symlinkTarget ?? [],
            AtimeNs = now, MtimeNs = now, CtimeNs = now, BtimeNs = now,
        });
        _w.Put(FileKeys.DirEntryKey(dir, name), Entry(ino, type));
        _w.Put(FileKeys.InodeRefKey(ino, dir, name), []);
        PutInode(dir, parent with { Nlink = parent.Nlink + (type == FileType.Directory ? 1u : 0u), MtimeNs = now, CtimeNs = now });
        return ino;
    }

    public void Link(ulong ino, ulong dir, byte[] name)
    {
        var inode = GetInode(ino);
        if (inode.Type == FileType.Directory) throw new InvalidRequestException("hard links to directories are not allowed");
        var parent = GetInode(dir);
        if (parent.Type != FileType.Directory) throw new InvalidRequestException("parent is not a directory");
        if (TryLookup(dir, name, out _, out _)) throw new InvalidRequestException($"'{System.Text.Encoding.UTF8.GetString(name)}' already exists");
        long now = Inode.NowNs();
        _w.Put(FileKeys.DirEntryKey(dir, name), Entry(ino, inode.Type));
        _w.Put(FileKeys.InodeRefKey(ino, dir, name), []);
        PutInode(ino, inode with { Nlink = inode.Nlink + 1, CtimeNs = now });
        PutInode(dir, parent with { MtimeNs = now, CtimeNs = now });
    }

    /// <summary>Removes a name; the inode goes when its last link does. Directories must be empty.</summary>
    public void Unlink(ulong dir, byte[] name)
    {
        if (!TryLookup(dir, name, out ulong ino, out var type)) throw new NotFoundException($"'{System.Text.Encoding.UTF8.GetString(name)}' does not exist");
        var inode = GetInode(ino);
        if (type == FileType.Directory && List(ino).Any()) throw new InvalidRequestException($"directory '{System.Text.Encoding.UTF8.GetString(name)}' is not empty");
        long now = Inode.NowNs();
        _w.Delete(FileKeys.DirEntryKey(dir, name));
        _w.Delete(FileKeys.InodeRefKey(ino, dir, name));
        var parent = GetInode(dir);
        PutInode(dir, parent with { Nlink = parent.Nlink - (type == FileType.Directory ? 1u : 0u), MtimeNs = now, CtimeNs = now });
        uint left = type == FileType.Directory ? 0 : inode.Nlink - 1;
        if (left > 0) { PutInode(ino, inode with { Nlink = left, CtimeNs = now }); return; }
        foreach (var (xname, _) in Xattrs(ino).ToList()) _w.Delete(FileKeys.XattrKey(ino, System.Text.Encoding.UTF8.GetBytes(xname)));
        // Deleting the inode releases its extent tree: background reclaim frees what nothing else shares.
        _w.Delete(FileKeys.InodeKey(ino));
    }

    public void Rename(ulong fromDir, byte[] fromName, ulong toDir, byte[] toName)
    {
        if (!TryLookup(fromDir, fromName, out ulong ino, out var type)) throw new NotFoundException($"'{System.Text.Encoding.UTF8.GetString(fromName)}' does not exist");
        if (fromDir == toDir && fromName.AsSpan().SequenceEqual(toName)) return;
        if (GetInode(toDir).Type != FileType.Directory) throw new InvalidRequestException("target parent is not a directory");
        if (type == FileType.Directory)
            for (ulong d = toDir; ; d = Parents(d).First().Parent)
            {
                if (d == ino) throw new InvalidRequestException("cannot move a directory into itself");
                if (d == RootIno) break;
            }
        if (TryLookup(toDir, toName, out ulong existing, out var existingType))
        {
            if (existing == ino) return;
            if ((existingType == FileType.Directory) != (type == FileType.Directory))
                throw new InvalidRequestException(type == FileType.Directory ? "cannot replace a non-directory with a directory" : "cannot replace a directory with a non-directory");
            Unlink(toDir, toName);
        }
        long now = Inode.NowNs();
        _w.Delete(FileKeys.DirEntryKey(fromDir, fromName));
        _w.Delete(FileKeys.InodeRefKey(ino, fromDir, fromName));
        _w.Put(FileKeys.DirEntryKey(toDir, toName), Entry(ino, type));
        _w.Put(FileKeys.InodeRefKey(ino, toDir, toName), []);
        var source = GetInode(fromDir);
        PutInode(fromDir, source with { Nlink = source.Nlink - (type == FileType.Directory ? 1u : 0u), MtimeNs = now, CtimeNs = now });
        var target = GetInode(toDir);
        PutInode(toDir, target with { Nlink = target.Nlink + (type == FileType.Directory ? 1u : 0u), MtimeNs = now, CtimeNs = now });
        PutInode(ino, GetInode(ino) with { CtimeNs = now });
    }

    public void SetXattr(ulong ino, byte[] name, byte[] value)
    {
        if (name.Length == 0 || name.Length > FileKeys.MaxNameBytes) throw new InvalidRequestException("an extended attribute name has 1 to 255 bytes");
        if (value.Length > 1024) throw new InvalidRequestException($"extended attribute value of {value.Length} bytes is over the limit of 1024");
        var inode = GetInode(ino);
        _w.Put(FileKeys.XattrKey(ino, name), value);
        PutInode(ino, inode with { CtimeNs = Inode.NowNs() });
    }

    public bool RemoveXattr(ulong ino, byte[] name)
    {
        if (!_w.Delete(FileKeys.XattrKey(ino, name))) return false;
        PutInode(ino, GetInode(ino) with { CtimeNs = Inode.NowNs() });
        return true;
    }

    // --- data -----------------------------------------------------------------------------

    /// <summary>
    /// Opens a file's extent tree for changes. The inode's own leaf is made private first: if a
    /// snapshot shares that leaf, copying it takes a reference to the extent root, so that shadowing
    /// the root below copies it instead of taking it over (Rodeh: a parent is shadowed before its child).
    /// </summary>
    public TreeWriter OpenExtents(ulong ino, Inode inode)
    {
        PutInode(ino, inode);
        return inode.Extents.IsNone ? TreeWriter.CreateEmpty(Space, TreeKind.FileExtents) : new TreeWriter(Space, inode.Extents, TreeKind.FileExtents);
    }

    /// <summary>
    /// Writes a changed extent tree and returns the inode pointing at its new root. Shadowing the
    /// old root already gave up the inode's reference to it, so nothing is released here.
    /// </summary>
    public static Inode SaveExtents(TreeWriter tree, Inode inode) => inode with { Extents = tree.Spill() };

    /// <summary>Applies <paramref name="edit"/> to the file's extent tree, then stores the new root, size and times.</summary>
    public void ChangeData(ulong ino, Inode inode, Action<TreeWriter> edit, ulong newSize) =>
        ChangeData(ino, inode, tree => { edit(tree); return newSize; });

    /// <summary>As above, with the new size decided by the edit.</summary>
    public void ChangeData(ulong ino, Inode inode, Func<TreeWriter, ulong> edit)
    {
        var tree = OpenExtents(ino, inode);
        ulong newSize = edit(tree);
        long now = Inode.NowNs();
        PutInode(ino, SaveExtents(tree, inode) with { Size = newSize, MtimeNs = now, CtimeNs = now, DataVersion = inode.DataVersion + 1 });
    }

    /// <summary>
    /// Makes this inode's data the same as <paramref name="source"/>'s by sharing its extent tree root: O(1).
    /// </summary>
    public void ShareExtents(ulong ino, Inode inode, Inode source)
    {
        PutInode(ino, inode); // make the leaf private first, as OpenExtents does
        if (!inode.Extents.IsNone) Space.ReleaseSubtree(inode.Extents);
        if (!source.Extents.IsNone) Space.AddRef(source.Extents.Address, 1);
        long now = Inode.NowNs();
        PutInode(ino, inode with { Extents = source.Extents, Size = source.Size, MtimeNs = now, CtimeNs = now, DataVersion = inode.DataVersion + 1 });
    }
}
