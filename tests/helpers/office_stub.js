// A stand-in for Office.js (https://appsforoffice.microsoft.com/lib/1/hosted/office.js) for browser tests of
// xlcf's task pane: the part of the Excel JavaScript API the pane uses, over a workbook given by the test in
// window.__xlcfBook = {name, active, selection, sheets: [{name, values, formulas?}], names: [...]}: a name is
// {name, sheet, address, scope} (a range) or {name, formula, scope} (any formula: "=2", "='s'!#REF!"); ``formulas``
// is what Range.formulas shows (a formula cell as "=...", any other cell as its value). With
// ``namesListedOnSheets`` the workbook's names also appear in every sheet's collection (scope "Workbook"), as some
// Excel versions list them.
//
// Like Office.js it is a proxy model: a property can be read only after load() and context.sync(), and writes
// take effect at the next sync(). Every write and every custom-function registration is recorded in
// window.__officeCalls for the test to check; registered functions are kept in window.__customFunctions.
"use strict";

(function () {
  const book = window.__xlcfBook;
  const calls = [];
  const functions = {};
  window.__officeCalls = calls;
  window.__customFunctions = functions;
  let toLoad = [];
  let toWrite = [];

  function columnName(index) {
    let name = "";
    for (let n = index + 1; n > 0; n = Math.floor((n - 1) / 26)) {
      name = String.fromCharCode(65 + ((n - 1) % 26)) + name;
    }
    return name;
  }

  function parseCell(ref) {
    const match = /^\$?([A-Z]+)\$?(\d+)$/.exec(ref);
    let column = 0;
    for (const ch of match[1]) {
      column = column * 26 + (ch.charCodeAt(0) - 64);
    }
    return [Number(match[2]) - 1, column - 1];
  }

  function quoteSheet(name) {
    return /^[A-Za-z_][A-Za-z0-9_.]*$/.test(name) ? name : `'${name.replace(/'/g, "''")}'`;
  }

  class Proxy {
    constructor(kind) {
      this._kind = kind;
      this._loaded = new Set();
      this._asked = new Set();
    }

    load(what) {
      const list = Array.isArray(what) ? what : String(what || "").split(",");
      list.map((p) => p.trim()).filter(Boolean).forEach((p) => this._asked.add(p));
      toLoad.push(this);
      return this;
    }

    _arrive() {
      this._asked.forEach((p) => {
        if (p.startsWith("items/")) {
          this._loaded.add("items");
          this._items().forEach((item) => item._loaded.add(p.slice(6)));
        } else if (p === "items") {
          this._loaded.add("items");
        } else {
          this._loaded.add(p);
        }
      });
      this._asked.clear();
    }

    _need(property) {
      if (!this._loaded.has(property)) {
        throw new Error(`PropertyNotLoaded: ${this._kind}.${property} was read before load() and sync()`);
      }
    }
  }

  class Range extends Proxy {
    constructor(sheet, row, column, rows, columns) {
      super("Range");
      Object.assign(this, { sheet, row, column, rows, columns });
    }

    get address() {
      this._need("address");
      const first = `${columnName(this.column)}${this.row + 1}`;
      const last = `${columnName(this.column + this.columns - 1)}${this.row + this.rows}`;
      return `${quoteSheet(this.sheet.name)}!${first}${this.rows * this.columns > 1 ? ":" + last : ""}`;
    }

    get values() {
      this._need("values");
      const out = [];
      for (let r = 0; r < this.rows; r++) {
        const row = [];
        for (let c = 0; c < this.columns; c++) {
          const value = (this.sheet.data[this.row + r] || [])[this.column + c];
          row.push(value === null || value === undefined ? "" : value);  // Office shows empty cells as ""
        }
        out.push(row);
      }
      return out;
    }

    get formulas() {
      this._need("formulas");
      const out = [];
      for (let r = 0; r < this.rows; r++) {
        const row = [];
        for (let c = 0; c < this.columns; c++) {
          const formula = ((this.sheet.formulas || [])[this.row + r] || [])[this.column + c];
          const value = (this.sheet.data[this.row + r] || [])[this.column + c];
          const shown = formula !== undefined && formula !== null && formula !== "" ? formula : value;
          row.push(shown === null || shown === undefined ? "" : shown);
        }
        out.push(row);
      }
      return out;
    }

    set values(values) {
      if (values.length !== this.rows || values.some((row) => row.length !== this.columns)) {
        throw new Error(`InvalidArgument: ${values.length} rows for a range of ${this.rows}x${this.columns}`);
      }
      toWrite.push(() => {
        values.forEach((row, r) => row.forEach((value, c) => {
          if (value !== null) {  // null leaves a cell as it is
            while (this.sheet.data.length <= this.row + r) {
              this.sheet.data.push([]);
            }
            this.sheet.data[this.row + r][this.column + c] = value;
          }
        }));
        this._loaded.add("address");
        calls.push({ op: "setValues", address: this.address, values: values });
      });
    }
  }

  class UsedRange extends Proxy {
    constructor(sheet) {
      super("Range");
      // as Excel: the smallest block holding every cell with a value or a formula (not always from A1)
      let top = Infinity;
      let left = Infinity;
      let bottom = -1;
      let right = -1;
      [sheet.data, sheet.formulas || []].forEach((grid) => grid.forEach((row, r) => row.forEach((value, c) => {
        if (value !== null && value !== undefined && value !== "") {
          top = Math.min(top, r);
          left = Math.min(left, c);
          bottom = Math.max(bottom, r);
          right = Math.max(right, c);
        }
      })));
      this.isNullObject = bottom < 0;
      this._box = this.isNullObject ? { rowIndex: 0, columnIndex: 0, rowCount: 0, columnCount: 0 }
        : { rowIndex: top, columnIndex: left, rowCount: bottom - top + 1, columnCount: right - left + 1 };
    }

    get rowIndex() { this._need("rowIndex"); return this._box.rowIndex; }
    get columnIndex() { this._need("columnIndex"); return this._box.columnIndex; }
    get rowCount() { this._need("rowCount"); return this._box.rowCount; }
    get columnCount() { this._need("columnCount"); return this._box.columnCount; }
  }

  class NamedItem extends Proxy {
    constructor(spec, sheetsByName) {
      super("NamedItem");
      this._spec = spec;
      this._sheets = sheetsByName;
    }

    get name() { this._need("name"); return this._spec.name; }
    get scope() { this._need("scope"); return this._spec.scope ? "Worksheet" : "Workbook"; }

    get type() {
      this._need("type");
      const formula = this._spec.formula;
      if (formula === undefined) {
        return "Range";
      }
      return /^=-?[0-9.]+$/.test(formula) ? "Double" : (formula.includes("#REF!") ? "Error" : "Range");
    }

    get formula() {
      this._need("formula");
      if (this._spec.formula !== undefined) {
        return this._spec.formula;
      }
      const sheet = quoteSheet(this._spec.sheet);
      return "=" + this._spec.address.split(",").map((area) =>
        `${sheet}!` + area.split(":").map((cell) => cell.replace(/([A-Z]+)(\d+)/, "$$$1$$$2")).join(":")).join(",");
    }

    getRange() {
      if (this._spec.address.includes(",")) {
        throw new Error("InvalidReference: the name refers to several areas");  // as Excel answers
      }
      const [first, last] = this._spec.address.split(":");
      const [r1, c1] = parseCell(first);
      const [r2, c2] = parseCell(last || first);
      return new Range(this._sheets.get(this._spec.sheet), r1, c1, r2 - r1 + 1, c2 - c1 + 1);
    }
  }

  class Collection extends Proxy {
    constructor(kind, items) {
      super(kind);
      this._list = items;
    }

    _items() { return this._list; }
    get items() { this._need("items"); return this._list; }
  }

  class Worksheet extends Proxy {
    constructor(spec, position) {
      super("Worksheet");
      this._name = spec.name;
      this._position = position;
      this.data = spec.values.map((row) => row.slice());
      this.formulas = (spec.formulas || []).map((row) => row.slice());
      this.names = null;  // set once every sheet exists
    }

    get name() { this._need("name"); return this._name; }
    get position() { this._need("position"); return this._position; }
    getUsedRangeOrNullObject() { return new UsedRange(this); }
    getRangeByIndexes(row, column, rows, columns) { return new Range(this, row, column, rows, columns); }

    getRange(address) {
      const [first, last] = address.replace(/\$/g, "").split(":");
      const [r1, c1] = parseCell(first);
      const [r2, c2] = parseCell(last || first);
      return new Range(this, r1, c1, r2 - r1 + 1, c2 - c1 + 1);
    }
  }

  const sheets = book.sheets.map((spec, position) => new Worksheet(spec, position));
  const byName = new Map(sheets.map((sheet) => [sheet._name, sheet]));
  sheets.forEach((sheet) => {
    sheet.names = new Collection("NamedItemCollection", book.names
      .filter((n) => n.scope === sheet._name || (book.namesListedOnSheets && !n.scope))
      .map((n) => new NamedItem(n, byName)));
  });
  const worksheets = new Collection("WorksheetCollection", sheets);
  worksheets.getActiveWorksheet = () => sheets[book.active];
  worksheets.getItem = (name) => {
    if (!byName.has(name)) {
      throw new Error(`ItemNotFound: no worksheet '${name}'`);
    }
    return byName.get(name);
  };

  const workbook = new Proxy("Workbook");
  Object.defineProperty(workbook, "name", { get() { this._need("name"); return book.name; } });
  workbook.worksheets = worksheets;
  workbook.names = new Collection("NamedItemCollection",
    book.names.filter((n) => !n.scope).map((n) => new NamedItem(n, byName)));
  workbook.getSelectedRange = () => {
    const [row, column] = parseCell(book.selection || "A1");
    return new Range(sheets[book.active], row, column, 1, 1);
  };

  const context = {
    workbook: workbook,
    sync: async () => {
      const loading = toLoad;
      const writing = toWrite;
      toLoad = [];
      toWrite = [];
      loading.forEach((proxy) => proxy._arrive());
      writing.forEach((write) => write());
      calls.push({ op: "sync" });
    },
  };

  window.Excel = {
    run: async (batch) => batch(context),
  };
  window.Office = {
    onReady: (callback) => {
      const info = { host: "Excel", platform: "OfficeOnline" };
      if (callback) {
        callback(info);
      }
      return Promise.resolve(info);
    },
    context: { requirements: { isSetSupported: () => true } },
  };

  class CustomFunctionsError extends Error {
    constructor(code, message) {
      super(message);
      this.code = code;
    }
  }

  window.CustomFunctions = {
    associate: (id, fn) => {
      functions[id] = fn;
      calls.push({ op: "associate", id: id });
    },
    Error: CustomFunctionsError,
    ErrorCode: { invalidValue: "#VALUE!" },
  };
})();
