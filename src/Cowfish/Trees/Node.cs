using System.Buffers.Binary;
using Cowfish.Format;

namespace Cowfish.Trees;

/// <summary>
/// A decoded B+tree node. A clean node (Dirty == false) came from disk or was just written:
/// it is immutable and may be shared by any number of readers through the cache. A dirty node
/// belongs to the one write transaction that made it and is changed in place until commit.
/// </summary>
/// <remarks>
/// Internal nodes hold one key per child: for i &gt; 0, Keys[i] is a lower bound of every key under
/// child i and Keys[1..] ascend strictly. Keys[0] carries no meaning (child 0 takes every key below
/// Keys[1]) and is never compared. Leaves hold sorted, unique keys.
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
    public readonly List<byte[]> Keys;
    public readonly List<byte[]>? Values;
    public readonly List<BlockRef>? Children;
    /// <summary>Dirty children of a dirty internal node; null where the child is the clean node at Children[i].</summary>
    public readonly List<Node?>? ChildNodes;
    /// <summary>Encoded payload size, kept up to date by every change.</summary>
    public int PayloadBytes;

    public Node(TreeKind kind, byte level, int capacity = 8)
    {
        Kind = kind;
        Level = level;
        Keys = new List<byte[]>(capacity);
        if (level == 0) Values = new List<byte[]>(capacity);
        else
        {
            Children = new List<BlockRef>(capacity);
            ChildNodes = new List<Node?>(capacity);
        }
    }

    public bool IsLeaf => Level == 0;
    public int Count => Keys.Count;
    public bool Overflows => PayloadBytes > Capacity;

    public static int LeafEntrySize(byte[] key, byte[] value) => LeafEntryOverhead + key.Length + value.Length;
    public static int InternalEntrySize(byte[] key) => InternalEntryOverhead + key.Length;

    /// <summary>A dirty copy of this node's contents (the address is left for the caller to decide).</summary>
    public Node CloneDirty()
    {
        var n = new Node(Kind, Level, Keys.Count + 2) { Generation = Generation, Dirty = true, PayloadBytes = PayloadBytes };
        n.Keys.AddRange(Keys);
        if (IsLeaf) n.Values!.AddRange(Values!);
        else
        {
            n.Children!.AddRange(Children!);
            for (int i = 0; i < Children!.Count; i++) n.ChildNodes!.Add(ChildNodes is { } cn && i < cn.Count ? cn[i] : null);
        }
        return n;
    }

    /// <summary>Index of the first key ≥ <paramref name="key"/> (leaf search), and whether it is equal.</summary>
    public int LowerBound(ReadOnlySpan<byte> key, out bool found)
    {
        int lo = 0, hi = Keys.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            int c = key.SequenceCompareTo(Keys[mid]);
            if (c == 0) { found = true; return mid; }
            if (c > 0) lo = mid + 1; else hi = mid;
        }
        found = false;
        return lo;
    }

    /// <summary>
    /// The child of an internal node whose range holds <paramref name="key"/>: the last i ≥ 1 with
    /// Keys[i] ≤ key, else 0. Keys[0] is never compared: child 0 takes everything below Keys[1].
    /// </summary>
    public int ChildFor(ReadOnlySpan<byte> key)
    {
        int lo = 1, hi = Keys.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (key.SequenceCompareTo(Keys[mid]) >= 0) lo = mid + 1; else hi = mid;
        }
        return lo - 1;
    }

    // --- encoding -------------------------------------------------------------------------

    /// <summary>Encodes into a full block and seals the header. Every child must be clean.</summary>
    public void Encode(Span<byte> block)
    {
        block.Clear();
        block[24] = (byte)Kind;
        block[25] = Level;
        BinaryPrimitives.WriteUInt16LittleEndian(block[26..], (ushort)Keys.Count);
        int p = HeaderSize;
        for (int i = 0; i < Keys.Count; i++)
        {
            var k = Keys[i];
            BinaryPrimitives.WriteUInt16LittleEndian(block[p..], (ushort)k.Length);
            if (IsLeaf)
            {
                var v = Values![i];
                BinaryPrimitives.WriteUInt16LittleEndian(block[(p + 2)..], (ushort)v.Length);
                p += 4;
                k.CopyTo(block[p..]); p += k.Length;
                v.CopyTo(block[p..]); p += v.Length;
            }
            else
            {
                System.Diagnostics.Debug.Assert(ChildNodes![i] is null, "encoding a node with a dirty child");
                BinaryPrimitives.WriteUInt64LittleEndian(block[(p + 2)..], Children![i].Address);
                BinaryPrimitives.WriteUInt64LittleEndian(block[(p + 10)..], Children[i].Generation);
                p += 18;
                k.CopyTo(block[p..]); p += k.Length;
            }
        }
        System.Diagnostics.Debug.Assert(p - HeaderSize == PayloadBytes, "payload size bookkeeping is off");
        BinaryPrimitives.WriteUInt16LittleEndian(block[28..], (ushort)p);
        BlockHeader.Seal(block, Magic.Node, Address, Generation);
    }

    /// <summary>Decodes and validates a node block; every bound is checked, so garbage gives a <see cref="CorruptionException"/>.</summary>
    public static Node Decode(ReadOnlySpan<byte> block, ulong address)
    {
        ulong gen = BlockHeader.Verify(block, Magic.Node, address, "tree node");
        byte kind = block[24];
        byte level = block[25];
        int count = BinaryPrimitives.ReadUInt16LittleEndian(block[26..]);
        int end = BinaryPrimitives.ReadUInt16LittleEndian(block[28..]);
        if (!ValueReferences.IsKnown(kind)) throw new CorruptionException(address, "tree node kind", "a known kind", kind.ToString());
        if (level >= Layout.MaxTreeDepth) throw new CorruptionException(address, "tree node level", $"< {Layout.MaxTreeDepth}", level.ToString());
        if (end < HeaderSize || end > Layout.BlockSize) throw new CorruptionException(address, "tree node payload end", $"{HeaderSize}..{Layout.BlockSize}", end.ToString());
        var n = new Node((TreeKind)kind, level, count) { Address = address, Generation = gen };
        int p = HeaderSize;
        for (int i = 0; i < count; i++)
        {
            int overhead = level == 0 ? LeafEntryOverhead : InternalEntryOverhead;
            if (p + overhead > end) throw new CorruptionException(address, $"entry {i} header", $"within {end}", $"at {p}");
            int kl = BinaryPrimitives.ReadUInt16LittleEndian(block[p..]);
            if (kl > Layout.MaxKeySize) throw new CorruptionException(address, $"entry {i} key length", $"<= {Layout.MaxKeySize}", kl.ToString());
            byte[] key;
            if (level == 0)
            {
                int vl = BinaryPrimitives.ReadUInt16LittleEndian(block[(p + 2)..]);
                if (vl > Layout.MaxValueSize) throw new CorruptionException(address, $"entry {i} value length", $"<= {Layout.MaxValueSize}", vl.ToString());
                p += 4;
                if (p + kl + vl > end) throw new CorruptionException(address, $"entry {i} data", $"within {end}", $"to {p + kl + vl}");
                key = block.Slice(p, kl).ToArray(); p += kl;
                n.Values!.Add(block.Slice(p, vl).ToArray()); p += vl;
            }
            else
            {
                var child = new BlockRef(BinaryPrimitives.ReadUInt64LittleEndian(block[(p + 2)..]), BinaryPrimitives.ReadUInt64LittleEndian(block[(p + 10)..]));
                if (child.Generation > gen) throw new CorruptionException(address, $"entry {i} child generation", $"<= {gen}", child.Generation.ToString());
                p += 18;
                if (p + kl > end) throw new CorruptionException(address, $"entry {i} key", $"within {end}", $"to {p + kl}");
                key = block.Slice(p, kl).ToArray(); p += kl;
                n.Children!.Add(child);
                n.ChildNodes!.Add(null);
            }
            if (i > (level == 0 ? 0 : 1) && n.Keys[i - 1].AsSpan().SequenceCompareTo(key) >= 0)
                throw new CorruptionException(address, $"key order at entry {i}", "strictly ascending keys", "a key not above its predecessor");
            n.Keys.Add(key);
        }
        if (p != end) throw new CorruptionException(address, "tree node payload end", end.ToString(), p.ToString());
        if (level > 0 && count == 0) throw new CorruptionException(address, "internal node child count", ">= 1", "0");
        n.PayloadBytes = p - HeaderSize;
        return n;
    }
}
