/**
 * The dashboard's page: static markup that dashboard.js (page-script.ts) fills in from the event
 * stream. Nothing in it depends on the resource or the backend, so it is served as it is; it loads
 * only the server's own script and style sheet (no fonts, no CDN).
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>partitioned-rate-limiter dashboard</title>
<link rel="stylesheet" href="./dashboard.css">
<script src="./dashboard.js" defer></script>
</head>
<body>
<header>
  <h1><span id="resource">…</span> <span class="muted">on <span id="backend">…</span></span></h1>
  <p id="connection" class="connection" role="status" data-state="connecting">connecting…</p>
</header>
<main>
  <div id="error" class="banner error" role="alert" hidden></div>
  <div id="grace" class="banner grace" role="status" hidden></div>
  <section aria-labelledby="plan-title">
    <h2 id="plan-title">Plan <span class="muted">epoch <span id="epoch">–</span></span></h2>
    <dl id="plan" class="plan"></dl>
  </section>
  <section aria-labelledby="partitions-title">
    <h2 id="partitions-title">Partitions <span class="muted" id="partitions-summary"></span></h2>
    <p class="muted legend">A letter and colour per holder (the key in the table below); dashed cells are free.</p>
    <div id="grid" class="grid" role="list"></div>
  </section>
  <section aria-labelledby="holders-title">
    <h2 id="holders-title">Holders</h2>
    <table id="holders">
      <thead>
        <tr>
          <th scope="col">key</th><th scope="col">holder</th><th scope="col">pool</th>
          <th scope="col" class="num">wants</th><th scope="col" class="num">weight</th><th scope="col" class="num">reserve</th>
          <th scope="col" class="num">fair share</th><th scope="col" class="num" title="partitions the backend shows this holder's leases on now">leases</th>
          <th scope="col" class="num" title="partitions the holder said it holds in its last record">held</th><th scope="col">partitions</th>
          <th scope="col" class="num">rate / interval</th>
        </tr>
      </thead>
      <tbody></tbody>
    </table>
    <p id="no-holders" class="muted" hidden>No holder has published a record.</p>
  </section>
  <section aria-labelledby="changes-title">
    <h2 id="changes-title">Lease moves and grace periods</h2>
    <ol id="changes" class="changes"></ol>
    <p id="no-changes" class="muted">Nothing has changed since the dashboard started.</p>
  </section>
</main>
<footer class="muted">Last read from the backend at <span id="read-at">–</span>.</footer>
<noscript>This page needs JavaScript; <a href="./state.json">state.json</a> has the same data.</noscript>
</body>
</html>
`;
