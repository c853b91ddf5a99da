namespace Cowfish.Trees;

/// <summary>One difference between two trees: a key only in the old tree, only in the new, or with different values.</summary>
internal readonly record struct TreeChange(byte[] Key, byte[]? Old, byte[]? New);

/// <summary>
/// Compares two trees and skips every subtree they share, so the cost grows with the differences
/// (times depth and fan-out), not with the size of the trees.
/// </summary>
/// <remarks>
/// Each side is a stream of items in key order, where an item is a leaf entry or a whole subtree.
/// When both heads are the same subtree (same block), both are dropped unread: they hold the same
/// entries and nothing before them remains on either side. Otherwise the higher subtree is opened
/// (both, when they are of equal height), and two entries are merged by key.
/// </remarks>
internal static class TreeDiff
{
    private sealed class Side(TreeReader tree)
    {
        public readonly TreeReader Tree = tree;
        public readonly List<(Node Node, int Index)> Stack = new();

        public bool Done => Stack.Count == 0;
        public Node Top => Stack[^1].Node;
        public int Index => Stack[^1].Index;
        public bool HeadIsEntry => Top.IsLeaf;

        /// <summary>Address of the head subtree, or 0 when it is dirty (never equal to anything).</summary>
        public ulong HeadAddress => Top.ChildNodes?[Index] is not null ? 0 : Top.ChildRef(Index).Address;
        public int HeadLevel => Top.Level - 1;

        public void Skip()
        {
            Stack[^1] = (Top, Index + 1);
            Normalize();
        }

        public void Expand()
        {
            var child = Tree.Child(Top, Index);
            Stack[^1] = (Top, Index + 1);
            Stack.Add((child, 0));
            Normalize();
        }

        public void Normalize()
        {
            while (Stack.Count > 0 && Index >= Top.Count) Stack.RemoveAt(Stack.Count - 1);
        }
    }

    public static IEnumerable<TreeChange> Diff(TreeReader oldTree, TreeReader newTree)
    {
        var a = new Side(oldTree);
        var b = new Side(newTree);
        Node ra = oldTree.Root(), rb = newTree.Root();
        if (!ra.Dirty && !rb.Dirty && ra.Address == rb.Address) yield break;
        a.Stack.Add((ra, 0)); a.Normalize();
        b.Stack.Add((rb, 0)); b.Normalize();
        while (!a.Done || !b.Done)
        {
            bool aSub = !a.Done && !a.HeadIsEntry, bSub = !b.Done && !b.HeadIsEntry;
            if (aSub && bSub)
            {
                ulong x = a.HeadAddress, y = b.HeadAddress;
                if (x != 0 && x == y) { a.Skip(); b.Skip(); continue; }
                int la = a.HeadLevel, lb = b.HeadLevel;
                if (la >= lb) a.Expand();
                if (lb >= la) b.Expand();
                continue;
            }
            if (aSub) { a.Expand(); continue; }
            if (bSub) { b.Expand(); continue; }
            if (b.Done)
            {
                yield return new TreeChange(a.Top.KeyArray(a.Index), a.Top.ValueArray(a.Index), null);
                a.Skip();
                continue;
            }
            if (a.Done)
            {
                yield return new TreeChange(b.Top.KeyArray(b.Index), null, b.Top.ValueArray(b.Index));
                b.Skip();
                continue;
            }
            int c = Compare(a, b);
            if (c < 0) { yield return new TreeChange(a.Top.KeyArray(a.Index), a.Top.ValueArray(a.Index), null); a.Skip(); }
            else if (c > 0) { yield return new TreeChange(b.Top.KeyArray(b.Index), null, b.Top.ValueArray(b.Index)); b.Skip(); }
            else
            {
                if (!SameValue(a, b)) yield return new TreeChange(a.Top.KeyArray(a.Index), a.Top.ValueArray(a.Index), b.Top.ValueArray(b.Index));
                a.Skip();
                b.Skip();
            }
        }
        }

    // Spans cannot live across a yield: the comparisons are done in these helpers.
    private static int Compare(Side a, Side b) => a.Top.Key(a.Index).SequenceCompareTo(b.Top.Key(b.Index));
    private static bool SameValue(Side a, Side b) => a.Top.Value(a.Index).SequenceEqual(b.Top.Value(b.Index));
}
