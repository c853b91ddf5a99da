using System.Buffers.Binary;
using System.Diagnostics;
using Cowfish.Format;

namespace Cowfish.Trees;

/// <summary>
/// A B+tree node that is its page: the entries stay encoded exactly as on disk (format v1), and a
/// table of entry offsets lets readers binary-search keys and read values in place, as spans, with
/// no object per key. A clean node (Dirty == false) came from disk or was just written: it is
/// immutable and may be shared by any number of readers through the cache. A dirty node belongs to
/// the one write transaction that made it and is edited in place (entries moved with memmove) until
/// it is written.
/// </summary>
/// <remarks>
/// Page layout (docs/format.md): a 32-byte block header, then <see cref="Count"/> packed entries.
/// A leaf entry is [key length u16][value length u16][key][value]; an internal entry is
/// [key length u16][child address u64][child generation u64][key]. Internal nodes hold one key per
/// child: for i &gt; 0, Key(i) is a lower bound of every key under child i and the keys from 1 on
/// ascend strictly; Key(0) carries no meaning (child 0 takes every key below Key(1)) and is never
/// compared. Leaves hold sorted, unique keys.
/// Pages come from a <see cref="PagePool"/>: pinned arrays that the collector never copies or
/// traces, recycled only once no reader can hold the node that used them (epoch-based
/// reclamation), so a reader that holds a node (a cursor, a diff) keeps reading the same bytes
/// across eviction and commits for as long as its transaction lives.
/// </remarks>
internal sealed class Node
{
    public const int HeaderSize = Layout.BlockHeaderSize;
    public const int LeafEntryOverhead = 4;      // u16 key length, u16 value length
    public const int InternalEntryOverhead = 18; // u16 key length, u64 child address, u64 child generation
    public const int Capacity = Layout.BlockSize - HeaderSize;


    public ulong Address;
    public ulong Generation;
    public TreeKind Kind;
    public byte Level;
    public bool Dirty;
    /// <summary>Dirty children of a dirty internal node; null where the child is the clean node at ChildRef(i). Null on clean nodes.</summary>
    public List<Node?>? ChildNodes;
    /// <summary>Encoded payload size: the entries' bytes after the header.</summary>
    public int PayloadBytes;

    private byte[] _page;
    private ushort[] _offsets;
    private int _count;
    // A pooled node keeps its list of dirty children from one use to the next.
    private readonly List<Node?>? _childList;

    private Node(TreeKind kind, byte level, byte[] page, ushort[] offsets)
    {
        Kind = kind;
        Level = level;
        _page = page;
        _offsets = offsets;
    }

    private Node(byte[] page, ushort[] offsets, List<Node?> childList) : this(TreeKind.Plain, 0, page, offsets) => _childList = childList;

    /// <summary>A blank node for a <see cref="PagePool"/>: a full page, room for every entry it can hold, and a list for dirty children.</summary>
    internal static Node NewPooled() => new(GC.AllocateUninitializedArray<byte>(PagePool.PageSize, pinned: true),
        GC.AllocateUninitializedArray<ushort>(PagePool.PageSize / LeafEntryOverhead, pinned: true), new List<Node?>(64));

    /// <summary>Whether the node came from a pool (and goes back to it when retired).</summary>
    internal bool Pooled => _childList is not null;

    /// <summary>The node's page, to read a block into before <see cref="Load"/>.</summary>
    internal byte[] Page => _page;

    /// <summary>Makes a pooled node empty and dirty.</summary>
    private Node Reset(TreeKind kind, byte level, ulong generation)
    {
        Kind = kind;
        Level = level;
        Generation = generation;
        Address = 0;
        Dirty = true;
        PayloadBytes = 0;
        _count = 0;
        _childList!.Clear();
        ChildNodes = level > 0 ? _childList : null;
        return this;
    }

    /// <summary>An empty dirty node.</summary>
    public static Node NewDirty(PagePool pages, TreeKind kind, byte level, ulong generation) => pages.Rent().Reset(kind, level, generation);

    /// <summary>Hands the node back to <paramref name="pages"/>: nobody who reaches it from now on may use it.</summary>
    public void Retire(PagePool pages) => pages.Retire(this);

    public bool IsLeaf => Level == 0;
    public int Count => _count;
    public bool Overflows => PayloadBytes > Capacity;

    public static int LeafEntrySize(int keyLength, int valueLength) => LeafEntryOverhead + keyLength + valueLength;
    public static int InternalEntrySize(int keyLength) => InternalEntryOverhead + keyLength;

    private int End => HeaderSize + PayloadBytes;

    // --- reading in place -------------------------------------------------------------------

    public ReadOnlySpan<byte> Key(int i)
    {
        int o = _offsets[i];
        int kl = BinaryPrimitives.ReadUInt16LittleEndian(_page.AsSpan(o));
        return _page.AsSpan(o + (IsLeaf ? LeafEntryOverhead : InternalEntryOverhead), kl);
    }

    public ReadOnlySpan<byte> Value(int i)
    {
        Debug.Assert(IsLeaf, "values live in leaves");
        int o = _offsets[i];
        int kl = BinaryPrimitives.ReadUInt16LittleEndian(_page.AsSpan(o));
        int vl = BinaryPrimitives.ReadUInt16LittleEndian(_page.AsSpan(o + 2));
        return _page.AsSpan(o + LeafEntryOverhead + kl, vl);
    }

    public byte[] KeyArray(int i) => Key(i).ToArray();
    public byte[] ValueArray(int i) => Value(i).ToArray();

    /// <summary>The child pointer of entry i of an internal node.</summary>
    public BlockRef ChildRef(int i)
    {
        Debug.Assert(!IsLeaf, "child pointers live in internal nodes");
        var p = _page.AsSpan(_offsets[i]);
        return new BlockRef(BinaryPrimitives.ReadUInt64LittleEndian(p[2..]), BinaryPrimitives.ReadUInt64LittleEndian(p[10..]));
    }

    /// <summary>Every child pointer of an internal node, in order.</summary>
    public BlockRef[] ChildRefs()
    {
        var all = new BlockRef[_count];
        for (int i = 0; i < _count; i++) all[i] = ChildRef(i);
        return all;
    }

    public int EntrySize(int i)
    {
        var p = _page.AsSpan(_offsets[i]);
        int kl = BinaryPrimitives.ReadUInt16LittleEndian(p);
        return IsLeaf ? LeafEntryOverhead + kl + BinaryPrimitives.ReadUInt16LittleEndian(p[2..]) : InternalEntryOverhead + kl;
    }

    /// <summary>Index of the first key ≥ <paramref name="key"/> (leaf search), and whether it is equal.</summary>
    public int LowerBound(ReadOnlySpan<byte> key, out bool found)
    {
        int lo = 0, hi = _count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            int c = key.SequenceCompareTo(Key(mid));
            if (c == 0) { found = true; return mid; }
            if (c > 0) lo = mid + 1; else hi = mid;
        }
        found = false;
        return lo;
    }

    /// <summary>
    /// The child of an internal node whose range holds <paramref name="key"/>: the last i ≥ 1 with
    /// Key(i) ≤ key, else 0. Key(0) is never compared: child 0 takes everything below Key(1).
    /// </summary>
    public int ChildFor(ReadOnlySpan<byte> key)
    {
        int lo = 1, hi = _count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (key.SequenceCompareTo(Key(mid)) >= 0) lo = mid + 1; else hi = mid;
        }
        return lo - 1;
    }

    // --- editing a dirty node ----------------------------------------------------------------

    /// <summary>A dirty copy of this node's entries (the address is left for the caller to decide).</summary>
    public Node CloneDirty(PagePool pages)
    {
        var n = pages.Rent().Reset(Kind, Level, Generation);
        n.PayloadBytes = PayloadBytes;
        n._count = _count;
        _page.AsSpan(HeaderSize, PayloadBytes).CopyTo(n._page.AsSpan(HeaderSize));
        _offsets.AsSpan(0, _count).CopyTo(n._offsets);
        if (!IsLeaf)
            for (int i = 0; i < _count; i++) n.ChildNodes!.Add(ChildNodes is { } cn ? cn[i] : null);
        return n;
    }

    /// <summary>Opens a gap of <paramref name="size"/> bytes for a new entry i; returns its offset.</summary>
    private int OpenGap(int i, int size)
    {
        Debug.Assert(Dirty, "editing a clean node");
        int at = i < _count ? _offsets[i] : End;
        if (End + size > _page.Length) throw new InvalidOperationException("node page overflow: the caller must split first");
        _page.AsSpan(at, End - at).CopyTo(_page.AsSpan(at + size));
        if (_count == _offsets.Length) Array.Resize(ref _offsets, _offsets.Length * 2);
        for (int j = _count; j > i; j--) _offsets[j] = (ushort)(_offsets[j - 1] + size);
        _offsets[i] = (ushort)at;
        _count++;
        PayloadBytes += size;
        return at;
    }

    /// <summary>Closes entry i's bytes and removes it.</summary>
    private void CloseGap(int i)
    {
        Debug.Assert(Dirty, "editing a clean node");
        int at = _offsets[i], size = EntrySize(i);
        _page.AsSpan(at + size, End - at - size).CopyTo(_page.AsSpan(at));
        for (int j = i; j < _count - 1; j++) _offsets[j] = (ushort)(_offsets[j + 1] - size);
        _count--;
        PayloadBytes -= size;
    }

    public void InsertLeaf(int i, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        int at = OpenGap(i, LeafEntrySize(key.Length, value.Length));
        var p = _page.AsSpan(at);
        BinaryPrimitives.WriteUInt16LittleEndian(p, (ushort)key.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(p[2..], (ushort)value.Length);
        key.CopyTo(p[LeafEntryOverhead..]);
        value.CopyTo(p[(LeafEntryOverhead + key.Length)..]);
    }

    /// <summary>Replaces the value of leaf entry i.</summary>
    public void SetValue(int i, ReadOnlySpan<byte> value)
    {
        var old = Value(i);
        if (old.Length == value.Length) { value.CopyTo(_page.AsSpan(_offsets[i] + LeafEntryOverhead + Key(i).Length)); return; }
        Span<byte> key = stackalloc byte[Layout.MaxKeySize];
        var k = Key(i);
        k.CopyTo(key);
        int kl = k.Length;
        CloseGap(i);
        InsertLeaf(i, key[..kl], value);
    }

    public void RemoveAt(int i)
    {
        CloseGap(i);
        if (ChildNodes is { } cn) cn.RemoveAt(i);
    }

    public void InsertChild(int i, ReadOnlySpan<byte> key, BlockRef child, Node? dirty)
    {
        int at = OpenGap(i, InternalEntrySize(key.Length));
        var p = _page.AsSpan(at);
        BinaryPrimitives.WriteUInt16LittleEndian(p, (ushort)key.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(p[2..], child.Address);
        BinaryPrimitives.WriteUInt64LittleEndian(p[10..], child.Generation);
        key.CopyTo(p[InternalEntryOverhead..]);
        ChildNodes!.Insert(i, dirty);
    }

    public void SetChildRef(int i, BlockRef child)
    {
        Debug.Assert(Dirty && !IsLeaf, "setting a child pointer of a clean node or a leaf");
        var p = _page.AsSpan(_offsets[i]);
        BinaryPrimitives.WriteUInt64LittleEndian(p[2..], child.Address);
        BinaryPrimitives.WriteUInt64LittleEndian(p[10..], child.Generation);
    }

    /// <summary>Replaces the key of internal entry i, keeping its child.</summary>
    public void SetChildKey(int i, ReadOnlySpan<byte> key)
    {
        var r = ChildRef(i);
        var d = ChildNodes![i];
        Span<byte> copy = stackalloc byte[Layout.MaxKeySize];
        key.CopyTo(copy);
        RemoveAt(i);
        InsertChild(i, copy[..key.Length], r, d);
    }

    /// <summary>Moves entries [from, Count) to the end of <paramref name="to"/>, an empty or smaller dirty node of the same level.</summary>
    public void MoveTail(int from, Node to)
    {
        int start = from < _count ? _offsets[from] : End, bytes = End - start;
        Append(to, from, _count, start, bytes);
        if (ChildNodes is { } cn) cn.RemoveRange(from, _count - from);
        _count = from;
        PayloadBytes -= bytes;
    }

    /// <summary>Appends every entry of <paramref name="from"/> (a node of the same level) to this dirty node.</summary>
    public void AppendAll(Node from) => from.Append(this, 0, from._count, HeaderSize, from.PayloadBytes);

    private void Append(Node to, int first, int last, int start, int bytes)
    {
        Debug.Assert(to.Dirty && to.Level == Level, "appending to a clean node or across levels");
        int at = to.End;
        if (at + bytes > to._page.Length) throw new InvalidOperationException("node page overflow while moving entries");
        _page.AsSpan(start, bytes).CopyTo(to._page.AsSpan(at));
        int need = to._count + (last - first);
        if (need > to._offsets.Length) Array.Resize(ref to._offsets, Math.Max(need, to._offsets.Length * 2));
        for (int j = first; j < last; j++) to._offsets[to._count + j - first] = (ushort)(_offsets[j] - start + at);
        if (to.ChildNodes is { } tcn)
            for (int j = first; j < last; j++) tcn.Add(ChildNodes is { } cn ? cn[j] : null);
        to._count = need;
        to.PayloadBytes += bytes;
    }

    // --- encoding -------------------------------------------------------------------------

    /// <summary>
    /// Seals the node's page as its block at <see cref="Address"/> and returns it: the header is
    /// written in place and the bytes after the entries are zeroed. Every child must be clean.
    /// </summary>
    public ReadOnlySpan<byte> Seal() => SealPage().Span;

    /// <summary><see cref="Seal"/>, as memory (for gathered writes).</summary>
    public ReadOnlyMemory<byte> SealPage()
    {
        Debug.Assert(ChildNodes is null || ChildNodes.TrueForAll(c => c is null), "encoding a node with a dirty child");
        Debug.Assert(!Overflows, "sealing an overflowing node");
        var block = _page.AsSpan(0, Layout.BlockSize);
        block[..HeaderSize].Clear();
        block[24] = (byte)Kind;
        block[25] = Level;
        BinaryPrimitives.WriteUInt16LittleEndian(block[26..], (ushort)_count);
        BinaryPrimitives.WriteUInt16LittleEndian(block[28..], (ushort)End);
        block[End..].Clear();
        BlockHeader.Seal(block, Magic.Node, Address, Generation);
        ChildNodes = null;
        return _page.AsMemory(0, Layout.BlockSize);
    }

    /// <summary>
    /// Decodes and validates a node block, taking <paramref name="page"/> (which must not be reused
    /// by the caller) as the node's page; every bound is checked, so garbage gives a
    /// <see cref="CorruptionException"/>.
    /// </summary>
    public static Node Decode(byte[] page, ulong address)
    {
        var n = new Node(TreeKind.Plain, 0, page, []);
        n.Load(address);
        return n;
    }

    /// <summary>
    /// Decodes and validates the block in this node's page as the node at <paramref name="address"/>,
    /// in place; every bound is checked, so garbage gives a <see cref="CorruptionException"/>.
    /// </summary>
    internal void Load(ulong address)
    {
        ReadOnlySpan<byte> block = _page.AsSpan(0, Layout.BlockSize);
        ulong gen = BlockHeader.Verify(block, Magic.Node, address, "tree node");
        byte kind = block[24];
        byte level = block[25];
        int count = BinaryPrimitives.ReadUInt16LittleEndian(block[26..]);
        int end = BinaryPrimitives.ReadUInt16LittleEndian(block[28..]);
        if (!ValueReferences.IsKnown(kind)) throw new CorruptionException(address, "tree node kind", "a known kind", kind.ToString());
        if (level >= Layout.MaxTreeDepth) throw new CorruptionException(address, "tree node level", $"< {Layout.MaxTreeDepth}", level.ToString());
        if (end < HeaderSize || end > Layout.BlockSize) throw new CorruptionException(address, "tree node payload end", $"{HeaderSize}..{Layout.BlockSize}", end.ToString());
        int overhead = level == 0 ? LeafEntryOverhead : InternalEntryOverhead;
        if (count > (end - HeaderSize) / overhead) throw new CorruptionException(address, "tree node entry count", $"<= {(end - HeaderSize) / overhead}", count.ToString());
        if (_offsets.Length < count) _offsets = new ushort[count];
        var offsets = _offsets;
        int p = HeaderSize, prevKey = -1, prevLen = 0;
        for (int i = 0; i < count; i++)
        {
            if (p + overhead > end) throw new CorruptionException(address, $"entry {i} header", $"within {end}", $"at {p}");
            offsets[i] = (ushort)p;
            int kl = BinaryPrimitives.ReadUInt16LittleEndian(block[p..]);
            if (kl > Layout.MaxKeySize) throw new CorruptionException(address, $"entry {i} key length", $"<= {Layout.MaxKeySize}", kl.ToString());
            int keyAt;
            if (level == 0)
            {
                int vl = BinaryPrimitives.ReadUInt16LittleEndian(block[(p + 2)..]);
                if (vl > Layout.MaxValueSize) throw new CorruptionException(address, $"entry {i} value length", $"<= {Layout.MaxValueSize}", vl.ToString());
                keyAt = p + LeafEntryOverhead;
                if (keyAt + kl + vl > end) throw new CorruptionException(address, $"entry {i} data", $"within {end}", $"to {keyAt + kl + vl}");
                p = keyAt + kl + vl;
            }
            else
            {
                ulong childGen = BinaryPrimitives.ReadUInt64LittleEndian(block[(p + 10)..]);
                if (childGen > gen) throw new CorruptionException(address, $"entry {i} child generation", $"<= {gen}", childGen.ToString());
                keyAt = p + InternalEntryOverhead;
                if (keyAt + kl > end) throw new CorruptionException(address, $"entry {i} key", $"within {end}", $"to {keyAt + kl}");
                p = keyAt + kl;
            }
            if (i > (level == 0 ? 0 : 1) && block.Slice(prevKey, prevLen).SequenceCompareTo(block.Slice(keyAt, kl)) >= 0)
                throw new CorruptionException(address, $"key order at entry {i}", "strictly ascending keys", "a key not above its predecessor");
            prevKey = keyAt;
            prevLen = kl;
        }
        if (p != end) throw new CorruptionException(address, "tree node payload end", end.ToString(), p.ToString());
        if (level > 0 && count == 0) throw new CorruptionException(address, "internal node child count", ">= 1", "0");
        Kind = (TreeKind)kind;
        Level = level;
        Address = address;
        Generation = gen;
        Dirty = false;
        ChildNodes = null;
        PayloadBytes = p - HeaderSize;
        _count = count;
    }

    /// <summary>Decodes a copy of <paramref name="block"/> (for callers that keep their buffer).</summary>
    public static Node Decode(ReadOnlySpan<byte> block, ulong address) => Decode(block[..Layout.BlockSize].ToArray(), address);
}
