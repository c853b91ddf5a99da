using System.Buffers.Binary;
using System.Text;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Files;

/// <summary>
/// The file-system part of check: every volume record names a volume tree, and inside each volume
/// the namespace holds together — entries point to inodes of the right type, every entry has its
/// back-reference and the other way round, link counts match, extent records decode, do not
/// overlap and end within the file's size, symlink sizes match their targets.
/// </summary>
internal static class VolumeChecker
{
    public static void Check(ReadTransaction rt, NodeStore store, Action<string, ulong, string> fault)
    {
        if (!rt.TryGetNamedTree(VolumeRecord.DirectoryName, out var dir)) return;
        var trees = rt.ListTrees().ToHashSet();
        foreach (var kv in rt.Scan(dir))
        {
            string name = Encoding.UTF8.GetString(kv.Key);
            VolumeRecord rec;
            try { rec = VolumeRecord.Decode(kv.Key, kv.Value); }
            catch (CorruptionException e) { fault("volume", 0, $"volume '{name}': {e.Message}"); continue; }
            if (!trees.Contains(rec.Tree)) { fault("volume", 0, $"volume '{name}' names tree {rec.Tree}, which does not exist"); continue; }
            var tree = rt.Tree(rec.Tree);
            if (tree.Kind != TreeKind.Volume) { fault("volume", 0, $"volume '{name}' names tree {rec.Tree} of kind {tree.Kind}"); continue; }
            try { CheckVolume(name, tree, store, fault); }
            catch (CorruptionException e) { fault("volume", e.Address, $"volume '{name}': {e.Message}"); }
        }
    }

    private static void CheckVolume(string vol, TreeReader tree, NodeStore store, Action<string, ulong, string> fault)
    {
        void Fault(string msg) => fault("volume", 0, $"volume '{vol}': {msg}");
        ulong nextIno = 0;
        var inodes = new Dictionary<ulong, Inode>();
        var entries = new List<(ulong Parent, byte[] Name, ulong Child, FileType Type)>();
        var refs = new HashSet<(ulong Ino, ulong Parent, string Name)>();
        var xattrOwners = new HashSet<ulong>();
        foreach (var kv in tree.Scan())
        {
            var k = kv.Key;
            var v = kv.Value;
            switch (k.Length > 0 ? k[0] : (byte)0xFF)
            {
                case FileKeys.Header when k.Length == 1 && v.Length == 8:
                    nextIno = BinaryPrimitives.ReadUInt64LittleEndian(v);
                    break;
                case FileKeys.Inode when k.Length == 9:
                {
                    ulong ino = BinaryPrimitives.ReadUInt64BigEndian(k.AsSpan(1));
                    try { inodes[ino] = Inode.Decode(v, 0, ino); }
                    catch (CorruptionException e) { Fault(e.Message); }
                    break;
                }
                case FileKeys.DirEntry when k.Length > 9 && v.Length == 9:
                    entries.Add((BinaryPrimitives.ReadUInt64BigEndian(k.AsSpan(1)), k.AsSpan(9).ToArray(), BinaryPrimitives.ReadUInt64LittleEndian(v), (FileType)v[8]));
                    break;
                case FileKeys.Xattr when k.Length > 9:
                    xattrOwners.Add(BinaryPrimitives.ReadUInt64BigEndian(k.AsSpan(1)));
                    break;
                case FileKeys.InodeRef when k.Length > 17 && v.Length == 0:
                {
                    var (parent, nm) = FileKeys.ParseInodeRef(k);
                    refs.Add((BinaryPrimitives.ReadUInt64BigEndian(k.AsSpan(1)), parent, Convert.ToBase64String(nm)));
                    break;
                }
                default:
                    Fault($"an entry with a {k.Length}-byte key and {v.Length}-byte value fits no known item");
                    break;
            }
        }
        if (nextIno == 0) Fault("no header");
        if (!inodes.TryGetValue(VolumeReader.RootIno, out var root) || root.Type != FileType.Directory) Fault("no root directory (inode 1)");
        foreach (ulong ino in inodes.Keys) if (ino >= nextIno) Fault($"inode {ino} is at or past the next free number {nextIno}");

        var links = new Dictionary<ulong, uint>();
        var subdirs = new Dictionary<ulong, uint>();
        foreach (var (parent, name, child, type) in entries)
        {
            string shown = Encoding.UTF8.GetString(name);
            if (!inodes.TryGetValue(parent, out var p) || p.Type != FileType.Directory) { Fault($"entry '{shown}' is in inode {parent}, which is not a directory"); continue; }
            if (!inodes.TryGetValue(child, out var c)) { Fault($"entry '{shown}' in directory {parent} points to missing inode {child}"); continue; }
            if (c.Type != type) Fault($"entry '{shown}' in directory {parent} says {type}, inode {child} is {c.Type}");
            if (!refs.Contains((child, parent, Convert.ToBase64String(name)))) Fault($"entry '{shown}' in directory {parent} has no back-reference in inode {child}");
            links[child] = links.GetValueOrDefault(child) + 1;
            if (c.Type == FileType.Directory) subdirs[parent] = subdirs.GetValueOrDefault(parent) + 1;
        }
        var entrySet = entries.Select(e => (e.Child, e.Parent, Convert.ToBase64String(e.Name))).ToHashSet();
        foreach (var r in refs) if (!entrySet.Contains(r)) Fault($"inode {r.Ino} has a back-reference from directory {r.Parent} with no entry there");
        foreach (ulong owner in xattrOwners) if (!inodes.ContainsKey(owner)) Fault($"extended attributes of missing inode {owner}");

        foreach (var (ino, inode) in inodes)
        {
            uint want = inode.Type == FileType.Directory ? 2 + subdirs.GetValueOrDefault(ino) : links.GetValueOrDefault(ino);
            if (ino != VolumeReader.RootIno && links.GetValueOrDefault(ino) == 0) Fault($"inode {ino} has no name (orphan)");
            if (inode.Nlink != want) Fault($"inode {ino} records {inode.Nlink} links, found {want}");
            if (inode.Type == FileType.Symlink && inode.Size != (ulong)inode.SymlinkTarget.Length) Fault($"symlink {ino} has size {inode.Size} for a {inode.SymlinkTarget.Length}-byte target");
            if (inode.Type == FileType.File && !inode.Extents.IsNone) CheckExtents(ino, inode, new TreeReader(store, inode.Extents, TreeKind.FileExtents) { BypassCache = true }, Fault);
        }
    }

    private static void CheckExtents(ulong ino, Inode inode, TreeReader extents, Action<string> fault)
    {
        ulong end = 0;
        ulong sizeBlocks = (inode.Size + Layout.BlockSize - 1) / Layout.BlockSize;
        foreach (var kv in extents.Scan())
        {
            if (kv.Key.Length != 8) { fault($"file {ino}: an extent key of {kv.Key.Length} bytes"); continue; }
            ulong start = FileKeys.ParseExtentKey(kv.Key);
            Extent e;
            try { e = Extent.Decode(kv.Value, 0); }
            catch (CorruptionException ex) { fault($"file {ino}: {ex.Message}"); continue; }
            if (start < end) fault($"file {ino}: extent at block {start} overlaps the one before (ends at {end})");
            if (start + e.Count > sizeBlocks) fault($"file {ino}: extent at block {start}+{e.Count} lies past the size ({inode.Size} bytes)");
            end = start + e.Count;
        }
    }
}
