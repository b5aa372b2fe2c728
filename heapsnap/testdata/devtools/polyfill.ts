// Node 20 lacks Promise.withResolvers (DevTools targets newer engines).
if (!(Promise as any).withResolvers) {
  (Promise as any).withResolvers = function() {
    let resolve: any, reject: any;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return {promise, resolve, reject};
  };
}
